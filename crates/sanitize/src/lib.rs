#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - `text`: [`clean_text`] and [`TextPolicy`]: the pass that runs to a fixed point.
//! - `control`: line breaks, tabs, control and bidirectional characters.
//! - `markup`: HTML removal through `ammonia`, and decoding back to plain text.
//! - `json`: [`clean_json`] and [`JsonPolicy`]: the cleaning walk.
//! - `shape`: the non-recursive look at a document's shape before cleaning,
//!   and the non-recursive drop of a refused one.
//! - `json_size`: bytes of compact JSON, counted without writing it.
//! - `pointer`: JSON pointers for error paths.
//! - `report`: [`SanitizeReport`]; `error`: [`SanitizeError`].

mod control;
mod error;
mod json;
mod json_size;
mod markup;
mod pointer;
mod report;
mod request_id;
mod shape;
mod text;

pub use error::{SHOWN_CHARS, SanitizeError};
pub use json::{FORBIDDEN_KEYS, JsonPolicy, MAX_DEPTH_LIMIT, Mode, clean_json, clean_json_report};
pub use report::SanitizeReport;
pub use request_id::{REQUEST_ID_MAX_LEN, request_id};
pub use text::{
    DEFAULT_MAX_CHARS, DEFAULT_MAX_INPUT_BYTES, MAX_PASSES, TextPolicy, clean_text,
    clean_text_report,
};
