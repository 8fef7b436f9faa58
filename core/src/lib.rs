//! DogFS core: the pure logic every other crate shares. No I/O and no async runtime here, so
//! everything in this crate can be tested exhaustively and used from any process.

pub mod checksum;
pub mod codec;
#[doc(hidden)]
pub mod fuzzing;
pub mod ids;
pub mod layout;
pub mod names;
pub mod placement;
pub mod scheme;
pub mod size;
pub mod transport;
