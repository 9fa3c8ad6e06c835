//! The fuzz targets' checks. They live in `checks/` so that the main crate's
//! integration tests include the same files (`tests/it/fuzz_corpora.rs`) and
//! run every committed corpus input through them on stable.

#[path = "../checks/mod.rs"]
pub mod checks;
