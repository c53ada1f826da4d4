//! `wovenet-tui`, the operator's console, as a library so its state and views are tested
//! without a terminal: the daemon mirror ([`model`]), what the operator is looking at
//! ([`view`]), the [`action::Action`]s that change either, the key table ([`keymap`]),
//! styles ([`theme`]), pure rendering ([`ui`]) and the one I/O loop ([`app`]).
//! Nothing here formats units itself: that is [`crate::ctl::units`].

pub mod action;
pub mod app;
pub mod backoff;
pub mod feed;
pub mod form;
pub mod keymap;
pub mod model;
pub mod theme;
pub mod ui;
pub mod update;
pub mod view;

pub use action::Action;
pub use model::Model;
pub use update::{Effect, State};
pub use view::{Tab, ViewState};
