//! Client library and console for wovenetd (filled in by the console work).
