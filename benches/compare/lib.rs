//! Nothing: the package is its bench, `main.rs`.
