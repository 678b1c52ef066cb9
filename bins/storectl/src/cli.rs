//! The commands and flags.

use clap::{Parser, Subcommand};
use uuid::Uuid;

/// The store API through the gateway.
#[derive(Debug, Parser)]
#[command(name = "storectl", version, about, long_about = None)]
pub struct Cli {
    /// The gateway's URL.
    #[arg(
        long,
        env = "STORECTL_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// The bearer token (`cargo xtask token --scope "..."` on the local
    /// stack).
    #[arg(
        long,
        env = "STORECTL_TOKEN",
        hide_env_values = true,
        global = true,
        default_value = ""
    )]
    pub token: Token,
    /// JSON instead of tables (and no progress on stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// One page of stores.
    List {
        /// Only stores in this status (PROVISIONING, ACTIVE,
        /// DECOMMISSIONED).
        #[arg(long)]
        status: Option<String>,
        /// Stores per page (1 to 200).
        #[arg(long)]
        limit: Option<u16>,
        /// The `nextCursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// A store.
    Show {
        /// The store's id.
        id: Uuid,
    },
    /// Creates a store (with an idempotency key; a queued write is
    /// awaited).
    Create {
        /// Its name.
        name: String,
        /// Its settings, a JSON object.
        #[arg(long)]
        config: Option<String>,
        /// A secret, `KEY=VALUE`, or `KEY=@FILE` to read the value from a
        /// file (a value on the command line is visible to other users'
        /// process lists). Repeat for more.
        #[arg(long = "secret")]
        secrets: Vec<String>,
        /// The idempotency key (default: a fresh one).
        #[arg(long)]
        key: Option<String>,
        /// Print only the new store's id.
        #[arg(long)]
        id_only: bool,
    },
    /// Moves a store to ACTIVE.
    Activate {
        /// The store's id.
        id: Uuid,
    },
    /// Moves a store to DECOMMISSIONED.
    Decommission {
        /// The store's id.
        id: Uuid,
    },
    /// One page of a store's history.
    History {
        /// The store's id.
        id: Uuid,
        /// Events per page (1 to 200).
        #[arg(long)]
        limit: Option<u16>,
        /// The `nextCursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// A store's decrypted secrets (the token needs `stores:secrets`).
    Secrets {
        /// The store's id.
        id: Uuid,
    },
}

/// The bearer token; `Debug` never shows it.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// The token's text.
    pub fn expose(&self) -> String {
        self.0.clone()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl std::str::FromStr for Token {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}
