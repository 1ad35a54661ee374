//! What security reviewers run against decision logs: verify the chain, query records, summarize
//! who fetched what. Files can be given in any order; they are read in chain order (by the `seq` of
//! their first record), across rotations.

pub mod read;
pub mod report;
pub mod summary;
pub mod verify;
