//! The `wovenetctl` command lines suggested to people (in `peers`, the console, and after
//! `peers forget`), written so that pasting one runs exactly that command: every word from
//! the daemon or the command line is POSIX shell-quoted (a site name is chosen by whoever
//! holds the network key, and `beta; rm -rf ~` is a valid one). Builds text only; the result
//! still goes through [`visible`](super::escape::visible) before reaching a terminal.

use std::path::Path;

/// The program name in suggested commands.
pub const PROGRAM: &str = "wovenetctl";

/// `word` as one shell word: unchanged when it needs no quoting, else quoted (`'a b'`).
/// A NUL byte cannot be passed in an argument at all; it is shown as `\0` so the command
/// fails to find the site rather than reach another one.
pub fn word(word: &str) -> String {
    match shlex::try_quote(word) {
        Ok(q) => q.into_owned(),
        Err(_) => shlex::try_quote(&word.replace('\0', "\\0"))
            .map(std::borrow::Cow::into_owned)
            .unwrap_or_else(|_| "''".to_owned()),
    }
}

/// How the daemon was chosen, as options for a suggested command: `--socket PATH` or
/// `--site NAME` when given on this command line, else nothing (the default selection
/// finds the same daemon again).
pub fn selection(socket: Option<&Path>, site: Option<&str>) -> String {
    match (socket, site) {
        (Some(p), _) => format!(" --socket {}", word(&p.to_string_lossy())),
        (None, Some(s)) => format!(" --site {}", word(s)),
        (None, None) => String::new(),
    }
}

/// `wovenetctl[ SELECTION] peers forget NAME`, with `--` before a name that starts with `-`
/// (so it is not read as an option).
pub fn forget_command(selection: &str, site: &str) -> String {
    let dashes = if site.starts_with('-') { "-- " } else { "" };
    format!("{PROGRAM}{selection} peers forget {dashes}{}", word(site))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_left_alone() {
        assert_eq!(forget_command("", "beta"), "wovenetctl peers forget beta");
        assert_eq!(
            forget_command("", "gamma-site.eu"),
            "wovenetctl peers forget gamma-site.eu"
        );
    }

    /// A name is chosen by any key holder: pasting the suggestion must run nothing else.
    #[test]
    fn names_with_shell_syntax_are_quoted_into_one_word() {
        for (name, quoted) in [
            ("beta; rm -rf ~", "'beta; rm -rf ~'"),
            ("$(reboot)", "'$(reboot)'"),
            ("it's", "\"it's\""),
            ("a`b`", "'a`b`'"),
            ("", "''"),
        ] {
            assert_eq!(word(name), quoted, "{name:?}");
            let cmd = forget_command("", name);
            assert_eq!(
                shlex::split(&cmd).unwrap(),
                ["wovenetctl", "peers", "forget", name],
                "{cmd}"
            );
        }
    }

    #[test]
    fn a_name_starting_with_a_dash_comes_after_double_dash() {
        let cmd = forget_command("", "-rf");
        assert_eq!(cmd, "wovenetctl peers forget -- -rf");
    }

    #[test]
    fn a_nul_byte_cannot_reach_another_site() {
        assert_eq!(word("a\0b"), r#""a\\0b""#);
    }

    #[test]
    fn the_daemon_selection_is_repeated_quoted() {
        assert_eq!(selection(None, None), "");
        assert_eq!(selection(None, Some("alpha")), " --site alpha");
        assert_eq!(
            selection(Some(Path::new("/run/my sites/a.sock")), Some("ignored")),
            " --socket '/run/my sites/a.sock'"
        );
        assert_eq!(
            forget_command(&selection(None, Some("alpha")), "beta"),
            "wovenetctl --site alpha peers forget beta"
        );
    }
}
