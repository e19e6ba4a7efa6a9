//! `kubelab-agent image …`: fill and inspect the image store from a shell.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::pull::{RegistryOptions, RegistryPuller};
use super::service::AuthConfig;
use super::store::{ImageStore, ImageSummary};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ImageCommand {
    /// Import images from an OCI image archive (tar, optionally gzipped) or an OCI layout directory.
    Import {
        /// Archive file or layout directory.
        path: PathBuf,
    },
    /// Pull an image from its registry, like `crictl pull`.
    Pull {
        /// `registry[:port]/name[:tag|@digest]`.
        reference: String,
        /// Credentials for the image's registry.
        #[arg(long, value_name = "USERNAME[:PASSWORD]")]
        creds: Option<String>,
        /// A registry (`host[:port]`) reached over plain HTTP; repeatable.
        #[arg(long, value_name = "HOST[:PORT]")]
        insecure_registry: Vec<String>,
    },
    /// List images in the store, like `crictl images`.
    Ls,
}

pub fn run_image_command(root_dir: &Path, cmd: ImageCommand) -> anyhow::Result<()> {
    let store = ImageStore::open(root_dir)
        .with_context(|| format!("opening the image store in {}", root_dir.display()))?;
    let mut out = std::io::stdout().lock();
    match cmd {
        ImageCommand::Import { path } => {
            let images = store
                .import(&path)
                .with_context(|| format!("importing images from {}", path.display()))?;
            for image in images {
                let name = image.reference.as_deref().unwrap_or("<none>");
                writeln!(out, "imported {name} ({})", short_id(&image.id))?;
            }
        }
        ImageCommand::Pull {
            reference,
            creds,
            insecure_registry,
        } => {
            let puller = RegistryPuller::new(
                store,
                RegistryOptions {
                    insecure_registries: insecure_registry,
                },
            );
            // As `crictl pull --creds`: one AuthConfig, whatever the registry.
            let auth = creds.map(|creds| {
                let (user, password) = creds.split_once(':').unwrap_or((&creds, ""));
                AuthConfig {
                    username: user.to_string(),
                    password: password.to_string(),
                }
            });
            let pulled = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(puller.pull(&reference, auth.as_ref()))
                .with_context(|| format!("pulling {reference}"))?;
            writeln!(out, "Image is up to date for {}", pulled.summary.id)?;
        }
        ImageCommand::Ls => {
            let images = store.list().context("listing images")?;
            out.write_all(render_table(&images).as_bytes())?;
        }
    }
    Ok(())
}

/// `crictl images`' table: IMAGE, TAG, IMAGE ID (13 hex digits), SIZE.
pub fn render_table(images: &[ImageSummary]) -> String {
    let mut rows = vec![[
        "IMAGE".to_string(),
        "TAG".to_string(),
        "IMAGE ID".to_string(),
        "SIZE".to_string(),
    ]];
    for image in images {
        let (repo, tag) = image.repository_and_tag();
        rows.push([
            repo,
            tag,
            short_id(&image.id).to_string(),
            human_size(image.size),
        ]);
    }
    let mut widths = [0usize; 4];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i == 3 {
                    cell.clone()
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        out.push_str(&line.join("   "));
        out.push('\n');
    }
    out
}

fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(13)]
}

/// Decimal units with four significant digits, as Docker's `units.HumanSize`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let int_digits = if value < 10.0 {
        1
    } else if value < 100.0 {
        2
    } else {
        3
    };
    let mut s = format!("{value:.prec$}", prec = 4 - int_digits);
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_crictl() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(2_231_296), "2.231MB");
        assert_eq!(human_size(12_500_000), "12.5MB");
        assert_eq!(human_size(123_456_789_012), "123.5GB");
    }

    #[test]
    fn table_has_crictl_columns() {
        let images = vec![
            ImageSummary {
                reference: Some("docker.io/library/busybox:latest".into()),
                id: format!("sha256:{}", "0123456789abcdef".repeat(4)),
                manifest_digest: String::new(),
                size: 1_000_000,
            },
            ImageSummary {
                reference: None,
                id: format!("sha256:{}", "f".repeat(64)),
                manifest_digest: String::new(),
                size: 5,
            },
        ];
        let table = render_table(&images);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "IMAGE                       TAG      IMAGE ID        SIZE"
        );
        assert_eq!(
            lines[1],
            "docker.io/library/busybox   latest   0123456789abc   1MB"
        );
        assert_eq!(
            lines[2],
            "<none>                      <none>   fffffffffffff   5B"
        );
    }
}
