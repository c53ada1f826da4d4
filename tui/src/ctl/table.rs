//! Aligned plain-text tables for people: upper-case headers, columns two spaces apart,
//! numbers right-aligned, `-` in empty cells, no trailing spaces, and every cell on one line
//! (hidden characters escaped, see [`escape`](super::escape)). Knows nothing of the API.

use super::escape::visible_owned;
use super::units::EMPTY;

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers and sizes.
    Right,
}

/// Space between columns.
const GAP: &str = "  ";

/// A table being filled row by row, then rendered once.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Option<Vec<String>>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers; a header starting with `>` is right-aligned
    /// (the `>` is not shown).
    pub fn new(headers: &[&str]) -> Self {
        let (headers, align) = headers
            .iter()
            .map(|h| match h.strip_prefix('>') {
                Some(h) => (h.to_owned(), Align::Right),
                None => ((*h).to_owned(), Align::Left),
            })
            .unzip();
        Self {
            headers: Some(headers),
            align,
            rows: Vec::new(),
        }
    }

    /// A table without a header line (key/value blocks), all columns left-aligned.
    pub fn plain(columns: usize) -> Self {
        Self {
            headers: None,
            align: vec![Align::Left; columns],
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are empty, extra cells are dropped, empty cells show `-`,
    /// hidden characters (a line feed, a bidi override) are escaped so a cell can neither
    /// add a line nor reorder one.
    pub fn row<I, S>(&mut self, cells: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut row: Vec<String> = cells
            .into_iter()
            .take(self.align.len())
            .map(Into::into)
            .map(|c| {
                if c.is_empty() {
                    EMPTY.to_owned()
                } else {
                    visible_owned(c)
                }
            })
            .collect();
        row.resize(self.align.len(), EMPTY.to_owned());
        self.rows.push(row);
        self
    }

    /// Whether no rows were added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The lines, each ending in `\n`.
    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths = vec![0; self.align.len()];
        for row in self.headers.iter().chain(&self.rows) {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        for row in self.headers.iter().chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str(GAP);
                }
                let pad = " ".repeat(widths[i] - width(cell));
                match self.align[i] {
                    Align::Left => {
                        line.push_str(cell);
                        line.push_str(&pad);
                    }
                    Align::Right => {
                        line.push_str(&pad);
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_numbers_align_right() {
        let mut t = Table::new(&["NAME", ">SENT", "STATE"]);
        t.row(["a", "1.5 KiB", "connected"]);
        t.row(["long-name", "0 B", "gone"]);
        assert_eq!(
            t.render(),
            "NAME          SENT  STATE\n\
             a          1.5 KiB  connected\n\
             long-name      0 B  gone\n"
        );
    }

    #[test]
    fn empty_and_missing_cells_show_a_dash_and_lines_have_no_trailing_spaces() {
        let mut t = Table::new(&["A", "B", "C"]);
        t.row(["x", ""]);
        t.row(["", "yy", "zzz", "dropped"]);
        assert_eq!(t.render(), "A  B   C\nx  -   -\n-  yy  zzz\n");
        for line in t.render().lines() {
            assert_eq!(line, line.trim_end());
        }
    }

    #[test]
    fn plain_tables_have_no_header_and_count_characters_not_bytes() {
        let mut t = Table::plain(2);
        t.row(["rtt", "350µs"]);
        t.row(["µ", "x"]);
        assert_eq!(t.render(), "rtt  350µs\nµ    x\n");
        assert!(!t.is_empty());
        assert!(Table::new(&["A"]).is_empty());
    }

    #[test]
    fn a_header_only_table_renders_its_header() {
        assert_eq!(Table::new(&["ID", ">N"]).render(), "ID  N\n");
    }
}
