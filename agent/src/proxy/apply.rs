//! The one place the iptables rules are made so: `iptables-restore --noflush
//! -w` of text [`super::iptables`] rendered (only the declared chains are
//! touched; the tables are never flushed), `iptables-save` to see what is
//! there, and [`cleanup`] of everything the proxy installed.
//!
//! The backend is the host's: `iptables --version` says `nf_tables` or
//! `legacy`, and the matching `iptables-nft-restore` / `iptables-legacy-restore`
//! is used, so the rules land where the host's own `iptables` shows them.

use std::io::Write;
use std::process::{Command, Stdio};

use super::iptables::{SavedTable, render_cleanup};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("running {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {stderr}{context}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
        /// The input lines around the one the tool named, if it named one.
        context: String,
    },
    #[error("`iptables --version` printed {0:?}: neither nf_tables nor legacy")]
    UnknownBackend(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IptablesBackend {
    Nft,
    Legacy,
}

/// The iptables tools of one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iptables {
    pub backend: IptablesBackend,
    /// `major.minor.patch` of iptables.
    pub version: (u32, u32, u32),
}

/// Runs `program args` with `input` on stdin; its stdout.
pub fn run_with_input(program: &str, args: &[&str], input: &str) -> Result<String, ApplyError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ApplyError::Spawn {
            program: program.into(),
            source,
        })?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    // A writer thread: the tool may answer (an error) before reading it all.
    let text = input.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(text.as_bytes());
    });
    let out = child
        .wait_with_output()
        .map_err(|source| ApplyError::Spawn {
            program: program.into(),
            source,
        })?;
    let _ = writer.join();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(ApplyError::Failed {
            program: program.into(),
            status: out.status.to_string(),
            context: error_context(&stderr, input),
            stderr,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The input lines around "line: N" of an iptables-restore or nft error.
fn error_context(stderr: &str, input: &str) -> String {
    let line = stderr
        .split("line: ")
        .nth(1)
        .or_else(|| stderr.split(".nft:").nth(1))
        .or_else(|| stderr.split("/dev/stdin:").nth(1))
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<usize>()
                .ok()
        });
    let Some(n) = line.filter(|n| *n > 0) else {
        return String::new();
    };
    let lines: Vec<&str> = input.lines().collect();
    let from = n.saturating_sub(3);
    let to = (n + 2).min(lines.len());
    let mut out = String::from("\ninput around that line:");
    for (i, l) in lines.iter().enumerate().take(to).skip(from) {
        out.push_str(&format!("\n{:>6} {l}", i + 1));
    }
    out
}

impl Iptables {
    /// The backend the host's `iptables` uses.
    pub fn detect() -> Result<Iptables, ApplyError> {
        let out = run_with_input("iptables", &["--version"], "")?;
        Self::from_version_output(&out)
    }

    /// Parses `iptables v1.8.9 (nf_tables)`.
    pub fn from_version_output(out: &str) -> Result<Iptables, ApplyError> {
        let backend = if out.contains("nf_tables") {
            IptablesBackend::Nft
        } else if out.contains("legacy") {
            IptablesBackend::Legacy
        } else {
            return Err(ApplyError::UnknownBackend(out.trim().into()));
        };
        let version = out
            .split_whitespace()
            .find_map(|w| w.strip_prefix('v'))
            .map(|v| {
                let mut n = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
                (
                    n.next().unwrap_or(0),
                    n.next().unwrap_or(0),
                    n.next().unwrap_or(0),
                )
            })
            .unwrap_or_default();
        Ok(Iptables { backend, version })
    }

    /// A chosen backend (version as the host's `iptables` reports).
    pub fn with_backend(backend: IptablesBackend) -> Result<Iptables, ApplyError> {
        let mut ipt = Self::detect().unwrap_or(Iptables {
            backend,
            version: (0, 0, 0),
        });
        ipt.backend = backend;
        Ok(ipt)
    }

    fn tool(&self, base: &str) -> String {
        let variant = match self.backend {
            IptablesBackend::Nft => format!("{base}-nft"),
            IptablesBackend::Legacy => format!("{base}-legacy"),
        };
        // Some distributions ship only the plain names (then that is the backend).
        if which(&variant) {
            variant
        } else {
            base.to_string()
        }
    }

    pub fn restore_program(&self) -> String {
        self.tool("iptables") + "-restore"
    }

    pub fn save_program(&self) -> String {
        self.tool("iptables") + "-save"
    }

    /// `MASQUERADE --random-fully` needs iptables 1.6.2.
    pub fn has_random_fully(&self) -> bool {
        self.version >= (1, 6, 2)
    }

    /// `iptables-restore --noflush -w`: only the chains `text` declares change.
    pub fn restore(&self, text: &str) -> Result<(), ApplyError> {
        run_with_input(&self.restore_program(), &["--noflush", "-w"], text).map(|_| ())
    }

    /// `iptables-save -t <table>`.
    pub fn save(&self, table: &str) -> Result<SavedTable, ApplyError> {
        match run_with_input(&self.save_program(), &["-t", table], "") {
            Ok(out) => Ok(SavedTable::parse(&out, table)),
            // A table nothing has created yet holds nothing of ours.
            Err(ApplyError::Failed { stderr, .. }) if stderr.contains("does not exist") => {
                Ok(SavedTable::default())
            }
            Err(e) => Err(e),
        }
    }
}

pub(crate) fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
        .unwrap_or(false)
}

/// What [`cleanup`] removed.
#[derive(Debug, Default)]
pub struct CleanupReport {
    /// Per backend that had any: the restore input that removed it.
    pub iptables: Vec<(IptablesBackend, String)>,
    pub nftables_table: bool,
}

/// Removes every chain and jump rule the proxy installed, in both iptables
/// backends, and its nftables table (`--cleanup`, as kube-proxy's).
pub fn cleanup() -> Result<CleanupReport, ApplyError> {
    let mut report = CleanupReport::default();
    for backend in [IptablesBackend::Nft, IptablesBackend::Legacy] {
        let ipt = Iptables::with_backend(backend)?;
        if !which(&ipt.save_program()) {
            continue;
        }
        let nat = ipt.save("nat")?;
        let filter = ipt.save("filter")?;
        if let Some(text) = render_cleanup(&nat, &filter) {
            ipt.restore(&text)?;
            tracing::info!(?backend, "removed the proxy's iptables rules");
            report.iptables.push((backend, text));
        }
    }
    if which("nft") {
        report.nftables_table = super::nftables::delete_table()?;
        if report.nftables_table {
            tracing::info!(
                table = super::nftables::TABLE,
                "removed the proxy's nftables table"
            );
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_and_version_come_from_iptables_version() {
        let nft = Iptables::from_version_output("iptables v1.8.9 (nf_tables)\n").unwrap();
        assert_eq!(nft.backend, IptablesBackend::Nft);
        assert_eq!(nft.version, (1, 8, 9));
        assert!(nft.has_random_fully());
        let legacy = Iptables::from_version_output("iptables v1.6.1 (legacy)").unwrap();
        assert_eq!(legacy.backend, IptablesBackend::Legacy);
        assert!(!legacy.has_random_fully());
        assert!(Iptables::from_version_output("something else").is_err());
    }

    #[test]
    fn errors_show_the_input_line_the_tool_named() {
        let input = "*nat\n:A - [0:0]\n-A A -j NOPE\n-A A -j X\nCOMMIT\n";
        let ctx = error_context(
            "iptables-restore: line 3 failed\nError occurred at line: 3",
            input,
        );
        assert!(ctx.contains("     3 -A A -j NOPE"), "{ctx}");
        assert_eq!(error_context("no line number", input), "");
    }
}
