//! The control API contract (filled in by the control-plane work).
