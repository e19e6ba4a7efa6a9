//! Pressure stall information (PSI): how long tasks waited for CPU, memory or
//! IO. cgroup v2 keeps `cpu.pressure`, `memory.pressure` and `io.pressure` in
//! every cgroup; the node's figures are in `/proc/pressure/{cpu,memory,io}`
//! (kernels built with PSI and booted without `psi=0`). A v1 hierarchy has none
//! (unless booted with `cgroup1_psi`-style options, which this driver does not
//! look for).

use std::io;
use std::path::Path;

/// One line of a pressure file: the share of wall time (percent) stalled over
/// 10 s, 60 s and 300 s, and the total stall time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PsiData {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    /// Microseconds, as the kernel counts them.
    pub total_us: u64,
}

/// `some`: at least one task stalled; `full`: every non-idle task stalled
/// at once (the kernel reports 0 for the whole system's CPU).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PsiStats {
    pub some: PsiData,
    pub full: PsiData,
}

/// The three resources' pressure of one cgroup (or of the node).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pressure {
    pub cpu: PsiStats,
    pub memory: PsiStats,
    pub io: PsiStats,
}

/// Parses a pressure file's `some …` and `full …` lines (a `full` line is
/// missing from older kernels' `cpu.pressure`: zeros). `None` if there is no
/// `some` line.
pub fn parse_psi(content: &str) -> Option<PsiStats> {
    let mut some = None;
    let mut full = PsiData::default();
    for line in content.lines() {
        let mut fields = line.split_whitespace();
        let kind = fields.next();
        let mut data = PsiData::default();
        for field in fields {
            let Some((key, value)) = field.split_once('=') else {
                continue;
            };
            match key {
                "avg10" => data.avg10 = value.parse().ok()?,
                "avg60" => data.avg60 = value.parse().ok()?,
                "avg300" => data.avg300 = value.parse().ok()?,
                "total" => data.total_us = value.parse().ok()?,
                _ => {}
            }
        }
        match kind {
            Some("some") => some = Some(data),
            Some("full") => full = data,
            _ => {}
        }
    }
    Some(PsiStats { some: some?, full })
}

/// The pressure files in `dir` (a cgroup v2 directory, or `/proc/pressure`
/// with names `cpu`, `memory`, `io`). `Ok(None)` when there are none: PSI is
/// off in this kernel, or it is a cgroup v1 directory.
pub fn read_pressure(dir: &Path, suffix: &str) -> io::Result<Option<Pressure>> {
    let read = |resource: &str| -> io::Result<Option<PsiStats>> {
        let path = dir.join(format!("{resource}{suffix}"));
        match std::fs::read_to_string(&path) {
            Ok(text) => parse_psi(&text).map(Some).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: not in the PSI format: {text:?}", path.display()),
                )
            }),
            // EOPNOTSUPP: the file is there, PSI is disabled (psi=0).
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::EOPNOTSUPP) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    };
    let Some(cpu) = read("cpu")? else {
        return Ok(None);
    };
    Ok(Some(Pressure {
        cpu,
        memory: read("memory")?.unwrap_or_default(),
        io: read("io")?.unwrap_or_default(),
    }))
}

/// The node's pressure, from `/proc/pressure`.
pub fn node_pressure() -> io::Result<Option<Pressure>> {
    read_pressure(Path::new("/proc/pressure"), "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_some_and_full() {
        let s = "some avg10=3.24 avg60=1.39 avg300=2.58 total=24081591221\n\
                 full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(
            parse_psi(s),
            Some(PsiStats {
                some: PsiData {
                    avg10: 3.24,
                    avg60: 1.39,
                    avg300: 2.58,
                    total_us: 24_081_591_221
                },
                full: PsiData::default(),
            })
        );
        // Before Linux 5.13 cpu.pressure has no full line.
        let s = "some avg10=0.50 avg60=0.10 avg300=0.02 total=1234\n";
        assert_eq!(parse_psi(s).unwrap().some.total_us, 1234);
        assert_eq!(parse_psi(s).unwrap().full, PsiData::default());
        assert_eq!(parse_psi(""), None);
        assert_eq!(parse_psi("some avg10=x total=1\n"), None);
    }

    #[test]
    fn missing_files_mean_no_psi() {
        let dir = std::env::temp_dir().join(format!("kubelab-psi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(read_pressure(&dir, ".pressure").unwrap(), None);
        std::fs::write(
            dir.join("cpu.pressure"),
            "some avg10=1.00 avg60=0.50 avg300=0.10 total=900\nfull avg10=0.50 avg60=0.20 avg300=0.05 total=400\n",
        )
        .unwrap();
        let p = read_pressure(&dir, ".pressure").unwrap().unwrap();
        assert_eq!(p.cpu.some.total_us, 900);
        assert_eq!(p.cpu.full.total_us, 400);
        assert_eq!(p.memory, PsiStats::default());
        std::fs::write(dir.join("io.pressure"), "garbage").unwrap();
        let err = read_pressure(&dir, ".pressure").unwrap_err();
        assert!(err.to_string().contains("not in the PSI format"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
