//! Strings from a peer made safe to log or echo back: [`synfed_wire::peer_text`], where the
//! chunk reassembly uses it too, re-exported for the server's handlers.

pub use synfed_wire::peer_text::{peer_text, MAX_PEER_TEXT_CHARS};
