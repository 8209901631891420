//! The deployment files (deploy/, k8s/) name only subcommands, flags, targets, environment
//! variables and ports that the binary really has, read from the binary's own `--help`, so the
//! manifests cannot drift from the code.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_agriportal");

fn help(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success(), "{args:?} --help failed");
    String::from_utf8(out.stdout).expect("utf8")
}

/// Words in `text` that start at `start` and continue with `[A-Za-z0-9_-]`.
fn words_after(text: &str, start: &str) -> BTreeSet<String> {
    text.match_indices(start)
        .map(|(i, _)| {
            text[i + start.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

struct Contract {
    subcommands: BTreeSet<String>,
    env: BTreeSet<String>,
    targets: BTreeSet<String>,
    help_by_subcommand: Vec<(String, String)>,
}

fn contract() -> Contract {
    let top = help(&[]);
    let subcommands: BTreeSet<String> = [
        "up", "serve", "migrate", "token", "config", "health", "bench",
    ]
    .iter()
    .filter(|s| top.contains(&format!("  {s} ")))
    .map(|s| s.to_string())
    .collect();
    assert!(
        subcommands.len() >= 6,
        "subcommands not found in --help: {top}"
    );
    let mut help_by_subcommand = Vec::new();
    let mut env = words_after(&top, "[env: ");
    for sub in &subcommands {
        let text = help(&[sub.as_str()]);
        env.extend(words_after(&text, "[env: "));
        help_by_subcommand.push((sub.clone(), text));
    }
    let serve = help(&["serve"]);
    let targets = serve
        .lines()
        .skip_while(|l| !l.contains("--target"))
        .filter_map(|l| {
            l.trim()
                .strip_prefix("- ")
                .or_else(|| l.trim().strip_prefix("* "))
        })
        .filter_map(|l| l.split([':', ' ']).next())
        .map(str::to_string)
        .collect();
    Contract {
        subcommands,
        env,
        targets,
        help_by_subcommand,
    }
}

fn files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = vec![
        root.join("deploy/compose.yaml"),
        root.join("deploy/Dockerfile"),
        root.join("k8s/base/agriportal.env"),
    ];
    let mut stack = vec![root.join("k8s")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read k8s").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                out.push(path);
            }
        }
    }
    out
}

/// The JSON-style argument lists of a file (`args: [...]`, `command: [...]`, `CMD [...]`).
fn argument_lists(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let open = l.find('[')?;
            let close = l.rfind(']')?;
            let head = &l[..open];
            if !(head.contains("args:")
                || head.contains("command:")
                || head.contains("test:")
                || head.contains("CMD")
                || head.contains("ENTRYPOINT"))
            {
                return None;
            }
            let items: Vec<String> = l[open + 1..close]
                .split(',')
                .map(|s| s.trim().trim_matches('"').to_string())
                .filter(|s| !s.is_empty())
                .collect();
            Some(items)
        })
        .collect()
}

#[test]
fn deployment_files_name_only_what_the_binary_has() {
    let c = contract();
    assert!(
        c.targets.contains("marketplace") && c.targets.contains("gateway"),
        "targets: {:?}",
        c.targets
    );
    let mut invocations = 0;
    let mut ports = BTreeSet::new();
    for path in files() {
        let text = std::fs::read_to_string(&path).expect("read");
        let name = path.display().to_string();
        // Environment variables the files set for the binary must be ones it reads.
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            let t = line
                .trim()
                .trim_start_matches("- ")
                .trim_start_matches("name: ");
            let key: String = t
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let rest = &t[key.len()..];
            let sets = rest.starts_with('=')
                || rest.starts_with(':')
                || (line.contains("name:") && rest.is_empty());
            let ours = key.starts_with("AGRIPORTAL_")
                || ["DATABASE_URL", "NATS_URL", "OTEL_EXPORTER_OTLP_ENDPOINT"]
                    .contains(&key.as_str());
            if sets && ours && key != "AGRIPORTAL_IMAGE" {
                assert!(
                    c.env.contains(&key),
                    "{name}: sets {key}, which the binary does not read (known: {:?})",
                    c.env
                );
            }
            for addr in ["AGRIPORTAL_GRPC_ADDR", "AGRIPORTAL_HTTP_ADDR"] {
                if let Some(v) = line
                    .split_once(&format!("{addr}="))
                    .or_else(|| line.split_once(&format!("{addr}: ")))
                {
                    if let Some(port) =
                        v.1.trim()
                            .trim_matches('"')
                            .rsplit(':')
                            .next()
                            .and_then(|p| p.parse::<u16>().ok())
                    {
                        ports.insert(port);
                    }
                }
            }
        }
        // Every invocation of the binary uses a real subcommand, real flags and a real target.
        for mut args in argument_lists(&text) {
            if args.first().is_some_and(|a| a == "CMD") {
                args.remove(0);
            }
            if args.first().is_some_and(|a| a.ends_with("/agriportal")) {
                args.remove(0);
            }
            let Some(sub) = args.first().cloned() else {
                continue;
            };
            if !c.subcommands.contains(&sub) {
                continue; // another program's arguments (nats-server, otelcol, pg_isready)
            }
            invocations += 1;
            let help = &c
                .help_by_subcommand
                .iter()
                .find(|(s, _)| *s == sub)
                .expect("help")
                .1;
            for (i, arg) in args.iter().enumerate() {
                if let Some(flag) = arg.strip_prefix("--") {
                    let flag = flag.split('=').next().unwrap_or(flag);
                    assert!(
                        help.contains(&format!("--{flag}")),
                        "{name}: `{sub} --{flag}` is not a flag of the binary"
                    );
                    if flag == "target" {
                        let target = args.get(i + 1).expect("target value");
                        assert!(
                            c.targets.contains(target),
                            "{name}: unknown target {target}"
                        );
                    }
                }
            }
        }
        // Container ports must be the ports the binary is told to listen on.
        for line in text.lines() {
            if let Some(v) = line.trim().strip_prefix("containerPort:") {
                let port: u16 = v.trim().parse().expect("port");
                assert!(
                    port == 50051 || port == 8080,
                    "{name}: containerPort {port} is neither the gRPC nor the HTTP port"
                );
            }
        }
    }
    assert!(
        invocations >= 5,
        "expected the manifests and compose file to invoke the binary; found {invocations}"
    );
    assert_eq!(
        ports,
        BTreeSet::from([50051, 8080]),
        "addresses set in the deployment files"
    );
}

#[test]
fn config_dump_leaves_secrets_out() {
    let out = Command::new(BIN)
        .env(
            "AGRIPORTAL_TOKEN_SECRET",
            "do-not-print-this-secret-ever-0123456789",
        )
        .env("DATABASE_URL", "postgres://user:hunter2@db/agriportal")
        .arg("config")
        .output()
        .expect("config");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(json["bus_prefix"], "agriportal");
    assert!(
        !text.contains("do-not-print") && !text.contains("hunter2"),
        "{text}"
    );
}

/// The runtime image is distroless `cc-debian12`: glibc, libm and libgcc_s, nothing else (no
/// OpenSSL, no libstdc++ from a C++ dependency). Without Docker to run the image, this is how
/// the tests know the binary they built would start in it.
#[test]
fn the_binary_needs_only_what_the_distroless_image_has() {
    let Ok(out) = Command::new("ldd").arg(BIN).output() else {
        eprintln!("SKIPPED the_binary_needs_only_what_the_distroless_image_has: no ldd");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/Dockerfile"))
            .expect("Dockerfile");
    assert!(
        dockerfile.contains("gcr.io/distroless/cc-debian12"),
        "the runtime stage changed: update this test's list"
    );
    let allowed = [
        "linux-vdso.so",
        "libc.so",
        "libm.so",
        "libgcc_s.so",
        "ld-linux-x86-64.so",
        "ld-linux-aarch64.so",
        "libdl.so",
        "libpthread.so",
        "librt.so",
    ];
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let name = line.split_whitespace().next().unwrap_or_default();
        let base = name.rsplit('/').next().unwrap_or(name);
        assert!(
            allowed.iter().any(|a| base.starts_with(a)),
            "the binary links {base}, which the distroless cc image does not have:\n{text}"
        );
    }
}
