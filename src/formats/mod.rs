//! The input forms more than one command reads, in no front end's module: the configured
//! catalog ([`catalog`]) and every state form ([`state`], with Singer's bookmark shape in
//! [`bookmarks`]). Front ends import these; these import no front end.

pub mod bookmarks;
pub mod catalog;
pub mod state;
