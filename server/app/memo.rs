//! Content memos: work whose result depends only on bytes is done once per process. Clips and
//! cuts are content-addressed and never deleted, so "these bytes" always means the same figures,
//! the same stored artifact and poster, and the same assembled cut. The memos are bounded (entry
//! counts, least recently used out first); a miss only costs the work itself.

use crate::domain::media::{Artifact, Figures};
use quick_cache::sync::Cache;

pub type Key = [u8; 32];

/// SHA-256 of a sequence of parts (each length-prefixed, so part boundaries count).
pub fn key(parts: &[&[u8]]) -> Key {
    crate::backends::content_key(parts)
}

pub struct Memo {
    /// A clip's bytes → its measured figures (`None`: it does not decode).
    pub figures: Cache<Key, Option<Figures>>,
    /// A video's bytes → where it is stored, with its probe and poster.
    pub stored: Cache<Key, Artifact>,
    /// The inputs of an assembly (clips, cuts, format) → the stored cut.
    pub cuts: Cache<Key, Artifact>,
}

impl Default for Memo {
    fn default() -> Self {
        Memo {
            figures: Cache::new(4096),
            stored: Cache::new(4096),
            cuts: Cache::new(1024),
        }
    }
}
