//! The one table from keys to [`Action`]s in normal mode. The footer hints (per tab: a key
//! that only works on one tab is hinted there) and the `?` overlay are generated from it,
//! so they cannot drift from what the keys do. Text entry
//! (form, filter) and y/n confirmation are mapped by [`map_key`] before the table.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::action::Action;
use super::view::{Tab, ViewState};

/// Where the footer hints at a binding (every binding is in the `?` overlay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// Only in `?`.
    Help,
    /// On every tab.
    Always,
    /// On this tab only (the key does nothing elsewhere).
    On(Tab),
}

/// One binding: key, action, the key as shown, what it does, where the footer shows it.
pub struct Binding {
    /// Key code.
    pub code: KeyCode,
    /// Builds the action.
    pub action: fn() -> Action,
    /// Key as shown to the operator.
    pub key: &'static str,
    /// What it does.
    pub help: &'static str,
    /// Where the footer shows it.
    pub footer: Hint,
}

macro_rules! bind {
    ($code:expr, $action:expr, $key:literal, $help:literal, $footer:literal) => {
        bind!(
            $code,
            $action,
            $key,
            $help,
            if $footer { Hint::Always } else { Hint::Help }
        )
    };
    ($code:expr, $action:expr, $key:literal, $help:literal, $footer:expr) => {
        Binding {
            code: $code,
            action: || $action,
            key: $key,
            help: $help,
            footer: $footer,
        }
    };
}

/// Normal-mode bindings.
pub const BINDINGS: &[Binding] = &[
    bind!(KeyCode::Char('q'), Action::Quit, "q", "quit", true),
    bind!(KeyCode::Char('?'), Action::Help, "?", "help", true),
    bind!(KeyCode::Tab, Action::NextTab, "Tab/1-5", "tabs", true),
    bind!(
        KeyCode::BackTab,
        Action::PrevTab,
        "S-Tab",
        "previous tab",
        false
    ),
    bind!(
        KeyCode::Char('1'),
        Action::SwitchTab(Tab::Sites),
        "1",
        "Sites",
        false
    ),
    bind!(
        KeyCode::Char('2'),
        Action::SwitchTab(Tab::Tunnels),
        "2",
        "Tunnels",
        false
    ),
    bind!(
        KeyCode::Char('3'),
        Action::SwitchTab(Tab::Streams),
        "3",
        "Streams",
        false
    ),
    bind!(
        KeyCode::Char('4'),
        Action::SwitchTab(Tab::Apps),
        "4",
        "Apps",
        false
    ),
    bind!(
        KeyCode::Char('5'),
        Action::SwitchTab(Tab::Events),
        "5",
        "Events",
        false
    ),
    bind!(KeyCode::Char('j'), Action::Down, "j/k", "move", true),
    bind!(KeyCode::Down, Action::Down, "↓", "down", false),
    bind!(KeyCode::Char('k'), Action::Up, "k", "up", false),
    bind!(KeyCode::Up, Action::Up, "↑", "up", false),
    bind!(KeyCode::Char('g'), Action::Top, "g", "first row", false),
    bind!(KeyCode::Home, Action::Top, "Home", "first row", false),
    bind!(KeyCode::Char('G'), Action::Bottom, "G", "last row", false),
    bind!(KeyCode::End, Action::Bottom, "End", "last row", false),
    bind!(KeyCode::Enter, Action::Enter, "Enter", "detail", true),
    bind!(KeyCode::Esc, Action::Back, "Esc", "close", false),
    bind!(
        KeyCode::Char('/'),
        Action::Filter,
        "/",
        "filter streams",
        false
    ),
    bind!(
        KeyCode::Char('s'),
        Action::CycleSort,
        "s",
        "sort streams",
        false
    ),
    bind!(KeyCode::Char('a'), Action::OpenAddApp, "a", "add app", true),
    bind!(
        KeyCode::Char('d'),
        Action::RemoveSelected,
        "d",
        "remove app",
        Hint::On(Tab::Apps)
    ),
    bind!(
        KeyCode::Char('f'),
        Action::ForgetSelected,
        "f",
        "forget peer",
        Hint::On(Tab::Sites)
    ),
];

/// Maps a key press to an action given the current mode; `None` when unbound.
pub fn map_key(key: KeyEvent, view: &ViewState) -> Option<Action> {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return Some(Action::Quit);
    }
    if view.confirm.is_some() {
        return match key.code {
            KeyCode::Char('y' | 'Y') => Some(Action::Confirm(true)),
            KeyCode::Char('n' | 'N') | KeyCode::Esc => Some(Action::Confirm(false)),
            _ => None,
        };
    }
    if view.form.is_some() {
        return match key.code {
            KeyCode::Esc => Some(Action::Back),
            KeyCode::Enter => Some(Action::Enter),
            KeyCode::Tab | KeyCode::Down => Some(Action::NextField),
            KeyCode::BackTab | KeyCode::Up => Some(Action::PrevField),
            KeyCode::Backspace => Some(Action::Backspace),
            KeyCode::Char(c) => Some(Action::Char(c)),
            _ => None,
        };
    }
    if view.filtering {
        return match key.code {
            KeyCode::Esc | KeyCode::Enter => Some(Action::Back),
            KeyCode::Backspace => Some(Action::Backspace),
            KeyCode::Char(c) => Some(Action::Char(c)),
            _ => None,
        };
    }
    BINDINGS
        .iter()
        .find(|b| b.code == key.code)
        .map(|b| (b.action)())
}

/// `key help` pairs for the footer of `tab`.
pub fn footer(tab: Tab) -> impl Iterator<Item = (&'static str, &'static str)> {
    BINDINGS
        .iter()
        .filter(move |b| match b.footer {
            Hint::Help => false,
            Hint::Always => true,
            Hint::On(t) => t == tab,
        })
        .map(|b| (b.key, b.help))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    #[test]
    fn number_keys_switch_tabs_and_q_quits_in_normal_mode() {
        let v = ViewState::default();
        assert!(matches!(
            map_key(key(KeyCode::Char('4')), &v),
            Some(Action::SwitchTab(Tab::Apps))
        ));
        assert!(matches!(
            map_key(key(KeyCode::Char('q')), &v),
            Some(Action::Quit)
        ));
    }

    #[test]
    fn in_the_form_letters_are_text_not_commands() {
        let v = ViewState {
            form: Some(Default::default()),
            ..Default::default()
        };
        assert!(matches!(
            map_key(key(KeyCode::Char('q')), &v),
            Some(Action::Char('q'))
        ));
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert!(matches!(map_key(ctrl_c, &v), Some(Action::Quit)));
    }

    #[test]
    fn f_forgets_and_the_footer_hints_at_it_on_the_sites_tab_only() {
        let v = ViewState::default();
        assert!(matches!(
            map_key(key(KeyCode::Char('f')), &v),
            Some(Action::ForgetSelected)
        ));
        let on = |tab| footer(tab).map(|(k, _)| k).collect::<Vec<_>>();
        assert!(on(Tab::Sites).contains(&"f"), "{:?}", on(Tab::Sites));
        assert!(!on(Tab::Sites).contains(&"d"), "{:?}", on(Tab::Sites));
        assert!(on(Tab::Apps).contains(&"d"), "{:?}", on(Tab::Apps));
        assert!(!on(Tab::Apps).contains(&"f"), "{:?}", on(Tab::Apps));
        assert!(on(Tab::Events).contains(&"q"), "{:?}", on(Tab::Events));
        // Confirmation keys answer the dialog, whatever it asks.
        let confirming = ViewState {
            confirm: Some(crate::console::view::Confirm::ForgetPeer {
                site: "beta".into(),
                pinned: String::new(),
                refused: String::new(),
            }),
            ..Default::default()
        };
        assert!(map_key(key(KeyCode::Char('f')), &confirming).is_none());
        assert!(matches!(
            map_key(key(KeyCode::Char('y')), &confirming),
            Some(Action::Confirm(true))
        ));
    }

    /// The footer is one line: at 80 columns every tab's hints must fit.
    #[test]
    fn every_tabs_footer_fits_80_columns() {
        for tab in Tab::ALL {
            let width: usize = footer(tab)
                .map(|(k, h)| k.chars().count() + h.chars().count() + 3)
                .sum();
            assert!(width <= 80, "{tab:?}: {width}");
        }
    }

    #[test]
    fn every_key_has_one_binding() {
        for (i, a) in BINDINGS.iter().enumerate() {
            for b in &BINDINGS[i + 1..] {
                assert_ne!(a.code, b.code, "{} bound twice", a.key);
            }
        }
    }
}
