//! `dogfs`, the DogFS command-line tool, as a library so `bench` and the tests reuse its parts.
//!
//! - [`args`]: the command line; [`commands`]: the object, bucket and cluster commands;
//! - [`admin`]: chunk server administration and the rebalance (`dogfs admin`);
//! - [`dev`]: a local cluster in one process (`dogfs dev`, `dogfs bench`);
//! - [`bench`]: workloads and their statistics (`dogfs bench`);
//! - [`target`], [`human`], [`output`], [`progress`], [`cluster`]: parsing and printing;
//! - [`exit`]: exit codes.

pub mod admin;
pub mod args;
pub mod bench;
pub mod cluster;
pub mod commands;
pub mod dev;
pub mod exit;
pub mod human;
pub mod output;
pub mod progress;
pub mod target;
