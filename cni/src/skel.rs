//! A plugin's `main`, as the spec defines the calling convention: the command
//! and container in environment variables, the network config on stdin, the
//! result (or an error object) on stdout, and a non-zero exit on error.

use std::io::{Read, Write};
use std::path::PathBuf;

use serde::Deserialize;

use crate::types::{self, CniError, CniResult, code};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }
}

/// One invocation: the environment and stdin.
#[derive(Debug, Clone)]
pub struct CmdArgs {
    pub command: Command,
    pub container_id: String,
    /// A path to the container's netns; may be empty on DEL.
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS` as given (`K=V;K=V`).
    pub args: String,
    pub path: Vec<PathBuf>,
    /// The network config, as bytes: delegated plugins get it unchanged.
    pub stdin: Vec<u8>,
    /// `cniVersion` of the config.
    pub cni_version: String,
}

impl CmdArgs {
    /// `CNI_ARGS` as key/value pairs.
    pub fn cni_args(&self) -> Vec<(String, String)> {
        parse_cni_args(&self.args)
    }
}

pub fn parse_cni_args(args: &str) -> Vec<(String, String)> {
    args.split(';')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub trait Plugin {
    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError>;
    fn del(&self, args: &CmdArgs) -> Result<(), CniError>;
    fn check(&self, args: &CmdArgs) -> Result<(), CniError>;
    fn status(&self, _args: &CmdArgs) -> Result<(), CniError> {
        Ok(())
    }
    fn gc(&self, _args: &CmdArgs) -> Result<(), CniError> {
        Ok(())
    }
}

#[derive(Deserialize)]
struct VersionOnly {
    #[serde(rename = "cniVersion", default)]
    cni_version: String,
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

/// Reads the invocation from the process environment and stdin.
pub fn args_from_env() -> Result<CmdArgs, CniError> {
    let command = env("CNI_COMMAND");
    let command = Command::parse(&command).ok_or_else(|| {
        CniError::new(
            code::INVALID_ENV,
            format!("CNI_COMMAND {command:?} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC"),
        )
    })?;
    let mut stdin = Vec::new();
    std::io::stdin()
        .read_to_end(&mut stdin)
        .map_err(|e| CniError::io("reading the network config from stdin", e))?;
    let cni_version = if stdin.iter().all(u8::is_ascii_whitespace) {
        String::new()
    } else {
        serde_json::from_slice::<VersionOnly>(&stdin)
            .map_err(|e| {
                CniError::new(code::DECODE_FAILURE, "decoding the network config")
                    .with_details(e.to_string())
            })?
            .cni_version
    };
    let args = CmdArgs {
        command,
        container_id: env("CNI_CONTAINERID"),
        netns: env("CNI_NETNS"),
        ifname: env("CNI_IFNAME"),
        args: env("CNI_ARGS"),
        path: std::env::split_paths(&env("CNI_PATH"))
            .filter(|p| !p.as_os_str().is_empty())
            .collect(),
        stdin,
        cni_version,
    };
    let mut required: Vec<(&str, bool)> = Vec::new();
    match command {
        Command::Add | Command::Check => required.extend([
            ("CNI_CONTAINERID", args.container_id.is_empty()),
            ("CNI_NETNS", args.netns.is_empty()),
            ("CNI_IFNAME", args.ifname.is_empty()),
            ("CNI_PATH", args.path.is_empty()),
        ]),
        Command::Del => required.extend([
            ("CNI_CONTAINERID", args.container_id.is_empty()),
            ("CNI_IFNAME", args.ifname.is_empty()),
            ("CNI_PATH", args.path.is_empty()),
        ]),
        Command::Version | Command::Status | Command::Gc => {}
    }
    let missing: Vec<&str> = required
        .iter()
        .filter(|(_, m)| *m)
        .map(|(n, _)| *n)
        .collect();
    if !missing.is_empty() {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!(
                "required environment variables missing: {}",
                missing.join(", ")
            ),
        ));
    }
    if command != Command::Version {
        if args.stdin.iter().all(u8::is_ascii_whitespace) {
            return Err(CniError::new(
                code::DECODE_FAILURE,
                "no network config on stdin",
            ));
        }
        types::check_version(&args.cni_version)?;
    }
    Ok(args)
}

/// Runs one plugin invocation and exits: 0 on success, 1 with the error JSON on stdout otherwise.
pub fn run(plugin: &dyn Plugin) -> ! {
    let mut version = String::new();
    let outcome = args_from_env().and_then(|args| {
        version = args.cni_version.clone();
        match args.command {
            Command::Version => Ok(Some(types::version_info(&args.cni_version))),
            Command::Add => {
                let result = plugin.add(&args)?;
                let v = if args.cni_version.is_empty() {
                    types::CURRENT_VERSION
                } else {
                    &args.cni_version
                };
                Ok(Some(
                    serde_json::to_value(result.for_version(v)).expect("results serialize"),
                ))
            }
            Command::Del => plugin.del(&args).map(|_| None),
            Command::Check => plugin.check(&args).map(|_| None),
            Command::Status => plugin.status(&args).map(|_| None),
            Command::Gc => plugin.gc(&args).map(|_| None),
        }
    });
    let mut out = std::io::stdout();
    match outcome {
        Ok(value) => {
            if let Some(v) = value {
                let _ = writeln!(out, "{}", serde_json::to_string(&v).expect("json"));
            }
            let _ = out.flush();
            std::process::exit(0)
        }
        Err(mut e) => {
            e.cni_version = if version.is_empty() {
                types::CURRENT_VERSION.into()
            } else {
                version
            };
            let _ = writeln!(out, "{}", serde_json::to_string(&e).expect("json"));
            let _ = out.flush();
            std::process::exit(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_args_split_into_pairs() {
        assert_eq!(
            parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.1.0.9"),
            vec![
                ("IgnoreUnknown".to_string(), "1".to_string()),
                ("K8S_POD_NAME".to_string(), "web".to_string()),
                ("IP".to_string(), "10.1.0.9".to_string()),
            ]
        );
        assert!(parse_cni_args("").is_empty());
    }
}
