//! The git engine: a cache of bare repositories, ls-remote, fetch, commits written without a work
//! tree, and pushes guarded by a lease (the expected old value of each branch).
//!
//! | module | what |
//! |---|---|
//! | [`auth`] | credentials, read from a Secret's data, never printed |
//! | [`error`] | what went wrong, in the kinds a person acts on differently |
//! | [`cache`] | bare repositories on disk, one per URL, and reused handles |
//! | [`certificates`] | the CA file of HTTPS remotes, read on a short process's first connection |
//! | [`remote`] | ls-remote, fetch, push under a lease, objects read and written |
//! | [`receive_pack`] | a push of a pack built from what a sync wrote, over libgit2's transports |
//! | [`packfile`] | packs and their indexes written from objects we hold |
//! | [`packs`] | a cache's pack files merged past git's `gc.autoPackLimit` |
//! | [`delta`] | deltas between versions of one large tree, for merged packs |
//! | [`hashed`] | a rendered tree hashed as git would, compared with a branch by ids |
//! | [`diff`] | unified diffs of two trees |
//! | [`known_hosts`] | SSH host keys against OpenSSH known_hosts lines |
//! | [`stream`] | libgit2's sockets, with TCP_NODELAY and quick ACKs |

pub mod auth;
pub mod cache;
pub mod certificates;
mod delta;
pub mod diff;
pub mod error;
pub mod hashed;
pub mod known_hosts;
pub mod packfile;
pub mod packs;
mod receive_pack;
pub mod remote;
mod stream;

pub use auth::Auth;
pub use cache::GitCache;
pub use diff::diff_trees;
pub use error::GitError;
pub use hashed::{Change, Committed, HashedTree, LastHash, MODE_DIR, MODE_FILE, MODE_GITLINK, Object};
pub use remote::{PROMOTIONS_PREFIX, RefUpdate, Remote, RemoteHeads};
pub use stream::{connections, connections_with_nagle};
