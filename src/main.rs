//! The `pgpilot` command.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kube::CustomResourceExt;

use pgpilot::api::PostgresCluster;
use pgpilot::config::Config;
use pgpilot::manifest::{self, MAX_INPUT_BYTES};
use pgpilot::{resolve, validate};

#[derive(Parser)]
#[command(
    name = "pgpilot",
    version,
    about = "A PostgreSQL operator for Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the PostgresCluster CustomResourceDefinition as YAML.
    Crd,
    /// Resolve PostgresCluster manifests offline, exactly as the admission webhook would:
    /// print the complete objects, or every field error. Exit 0: resolved; 1: invalid;
    /// 2: unreadable input.
    Resolve {
        /// A YAML file with one or more PostgresCluster documents; `-` reads standard input.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Operator configuration file (YAML) laid over the compiled-in defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Exit codes of `pgpilot resolve`.
const EXIT_INVALID: u8 = 1;
const EXIT_UNREADABLE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            let yaml = serde_yaml::to_string(&PostgresCluster::crd()).expect("the CRD serializes");
            print_or_fail(&yaml)
        }
        Command::Resolve { file, config } => resolve_command(&file, config.as_deref()),
    }
}

fn print_or_fail(text: &str) -> ExitCode {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: writing output: {e}");
            ExitCode::from(EXIT_UNREADABLE)
        }
    }
}

fn load_config(path: Option<&std::path::Path>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(p).map_err(|e| format!("configuration {e}")),
        None => Ok(Config::default()),
    }
}

/// Reads at most `MAX_INPUT_BYTES` from a file or standard input, as UTF-8.
fn read_input(file: &std::path::Path) -> Result<String, String> {
    let name = file.display();
    let mut bytes = Vec::new();
    let limit = MAX_INPUT_BYTES as u64 + 1;
    let read = if file.as_os_str() == "-" {
        std::io::stdin().lock().take(limit).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit).read_to_end(&mut bytes))
    };
    read.map_err(|e| format!("{name}: {e}"))?;
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(format!("{name}: larger than {MAX_INPUT_BYTES} bytes"));
    }
    String::from_utf8(bytes).map_err(|e| format!("{name}: not UTF-8 text ({e})"))
}

fn resolve_command(file: &std::path::Path, config: Option<&std::path::Path>) -> ExitCode {
    let unreadable = |message: String| {
        eprintln!("error: {message}");
        ExitCode::from(EXIT_UNREADABLE)
    };
    let config = match load_config(config) {
        Ok(c) => c,
        Err(e) => return unreadable(e),
    };
    let text = match read_input(file) {
        Ok(t) => t,
        Err(e) => return unreadable(e),
    };
    let clusters = match manifest::from_yaml_stream(&text) {
        Ok(c) => c,
        Err(e) => return unreadable(format!("{}: {e}", file.display())),
    };
    let mut output = String::new();
    let mut invalid = false;
    for (i, mut cluster) in clusters.into_iter().enumerate() {
        cluster.spec = resolve::resolve(&cluster.spec, None, &config);
        let outcome = validate::validate(&cluster, None);
        let name = cluster.metadata.name.as_deref().unwrap_or("<unnamed>");
        for w in &outcome.warnings {
            eprintln!("Warning: {name}: {w}");
        }
        if !outcome.is_valid() {
            invalid = true;
            eprintln!(
                "error: PostgresCluster {name:?} (document {}) is invalid:",
                i + 1
            );
            for e in &outcome.errors {
                eprintln!("  {e}");
            }
            continue;
        }
        match serde_yaml::to_string(&cluster) {
            Ok(yaml) => {
                output.push_str("---\n");
                output.push_str(&yaml);
            }
            Err(e) => return unreadable(format!("document {}: {e}", i + 1)),
        }
    }
    // All or nothing: with any invalid document, nothing goes to standard output.
    if invalid {
        return ExitCode::from(EXIT_INVALID);
    }
    print_or_fail(&output)
}
