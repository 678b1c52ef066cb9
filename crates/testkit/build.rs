//! Rebuilds the crate when `migrations/` changes: refinery's
//! `embed_migrations!` reads the folder at compile time, and cargo does not
//! track a new file there by itself.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
