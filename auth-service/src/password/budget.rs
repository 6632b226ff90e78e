//! How many hashing workers a replica can afford. Each holds one argon2 block
//! ([`BLOCK_BYTES`], 19 MiB), so a replica needs about [`BASE_BYTES`] + workers × 19 MiB. By
//! default there is one worker per CPU the process may use but one (a CPU is left to the
//! request path, however many sign-ins come), fewer when the container's memory
//! limit (cgroup v2 `memory.max`, or cgroup v1 `memory.limit_in_bytes`) has no room for that many; a configured count that does not
//! fit under a known limit is refused at start-up rather than met by the OOM killer mid-storm.

use std::{
    io,
    path::{Component, Path, PathBuf},
};

pub use super::memory::BLOCK_BYTES;

/// What auth-service needs besides the hashing blocks, with room to spare for connections and
/// calls in flight: a debug build measured 17 MiB idle and 19 MiB beside its two blocks after
/// 288 sign-ins from 24 clients (PostgreSQL).
pub const BASE_BYTES: u64 = 64 * MIB;

const MIB: u64 = 1024 * 1024;

/// Where the cgroup hierarchy is mounted (in a container, the container's own cgroup): cgroup v2
/// itself, or cgroup v1's controllers in directories below it (`memory/`).
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The default worker count: one per CPU but one, as many as fit in `memory_limit` beyond the
/// base, and at least one (a limit too small for one is then refused by [`check`]).
///
/// One CPU is kept from hashing: the hashing threads' low scheduling priority leaves the request
/// path CPU time, but it still shares the caches and memory bandwidth with argon2, which
/// streams 19 MiB per hash. With every CPU hashing, other calls' p99 during a sign-in storm
/// reached about twice idle (`scripts/bench --storm-only`, 2 CPUs: reads 2.06× and 1.70×,
/// JWKS 2.07× and 2.28×; with one worker 1.85× and 1.72×, 1.44× and 1.78×).
pub fn default_workers(cpus: usize, memory_limit: Option<u64>) -> usize {
    let fit = memory_limit.map_or(usize::MAX, |limit| {
        usize::try_from(limit.saturating_sub(BASE_BYTES) / BLOCK_BYTES).unwrap_or(usize::MAX)
    });
    cpus.saturating_sub(1).min(fit).max(1)
}

/// The memory `workers` need: the base plus one block each.
pub fn needed(workers: usize) -> u64 {
    BASE_BYTES.saturating_add((workers as u64).saturating_mul(BLOCK_BYTES))
}

/// Why `workers` do not fit in `memory_limit`, if they do not.
pub fn check(workers: usize, memory_limit: Option<u64>) -> Result<(), String> {
    match memory_limit {
        Some(limit) if needed(workers) > limit => Err(format!(
            "{workers} hashing workers need {} MiB ({} MiB base + {workers} × {} MiB), more \
             than the memory limit of {} MiB (the cgroup's); set AUTH_HASH_WORKERS to at \
             most {} or raise the limit",
            needed(workers) / MIB,
            BASE_BYTES / MIB,
            BLOCK_BYTES / MIB,
            limit / MIB,
            limit.saturating_sub(BASE_BYTES) / BLOCK_BYTES,
        )),
        _ => Ok(()),
    }
}

/// This process's memory limit: the smallest `memory.max` of its cgroup and the cgroups above
/// it, under the cgroup v2 hierarchy mounted at `root`; failing that, the smallest cgroup v1
/// `memory.limit_in_bytes` under `root/memory`. `None` when no limit is set or none can be found
/// (no cgroup file system, not Linux).
pub fn memory_limit(root: &Path) -> io::Result<Option<u64>> {
    let membership = match std::fs::read_to_string("/proc/self/cgroup") {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    memory_limit_of(root, &membership)
}

/// [`memory_limit`] for the process whose `/proc/<pid>/cgroup` reads `membership`.
pub fn memory_limit_of(root: &Path, membership: &str) -> io::Result<Option<u64>> {
    let v2 = smallest_limit(
        cgroup_and_ancestors(
            root,
            own_cgroup(membership, |controllers| controllers.is_empty()),
        ),
        "memory.max",
        parse_memory_max,
    )?;
    if v2.is_some() {
        return Ok(v2);
    }
    smallest_limit(
        cgroup_and_ancestors(
            &root.join("memory"),
            own_cgroup(membership, |controllers| {
                controllers.split(',').any(|c| c == "memory")
            }),
        ),
        "memory.limit_in_bytes",
        parse_limit_in_bytes,
    )
}

/// The smallest limit that `file` in `dirs` states (`parse` reads one; `None` is no limit).
fn smallest_limit(
    dirs: Vec<PathBuf>,
    file: &str,
    parse: fn(&str) -> Result<Option<u64>, String>,
) -> io::Result<Option<u64>> {
    let mut limit: Option<u64> = None;
    for dir in dirs {
        let file = dir.join(file);
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            // The root cgroup has no memory.max, nor has a cgroup outside this mount.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", file.display()))),
        };
        let here = parse(&text).map_err(|problem| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {problem}", file.display()),
            )
        })?;
        limit = match (limit, here) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(limit)
}

/// The process's cgroup path in the hierarchy whose controller list `controllers` accepts
/// (`hierarchy-id:controllers:path` lines of `/proc/<pid>/cgroup`; cgroup v2's is `0::path`).
fn own_cgroup(membership: &str, controllers: impl Fn(&str) -> bool) -> Option<&str> {
    membership.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_id, list, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers(list).then_some(path)
    })
}

/// The directories of the process's cgroup (`own`, a path from `own_cgroup`) from its own up
/// to `root`; only `root` when there is none or it leads outside (`..`, as from a cgroup
/// namespace the process is not in). In a container without a cgroup namespace the path is the
/// host's, which the container's mount does not hold: of these, only `root` (the container's
/// own cgroup) then exists.
fn cgroup_and_ancestors(root: &Path, own: Option<&str>) -> Vec<PathBuf> {
    let own = own.map(Path::new).filter(|path| {
        path.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
    });
    let mut dirs = vec![root.to_path_buf()];
    let mut dir = root.to_path_buf();
    for component in own.into_iter().flat_map(Path::components) {
        if let Component::Normal(name) = component {
            dir.push(name);
            dirs.push(dir.clone());
        }
    }
    dirs.reverse();
    dirs
}

/// `memory.max`: a number of bytes, or `max` for no limit.
fn parse_memory_max(text: &str) -> Result<Option<u64>, String> {
    match text.trim() {
        "max" => Ok(None),
        value => value
            .parse()
            .map(Some)
            .map_err(|_| format!("expected a number of bytes or \"max\", found {value:?}")),
    }
}

/// cgroup v1 `memory.limit_in_bytes`: a number of bytes; no limit reads as the largest page
/// multiple below 2^63 (9223372036854771712), so anything from 2^62 up is taken as none.
fn parse_limit_in_bytes(text: &str) -> Result<Option<u64>, String> {
    let value = text.trim();
    let bytes: u64 = value
        .parse()
        .map_err(|_| format!("expected a number of bytes, found {value:?}"))?;
    Ok((bytes < 1 << 62).then_some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_max_is_bytes_or_max() {
        assert_eq!(parse_memory_max("536870912\n"), Ok(Some(512 * MIB)));
        assert_eq!(parse_memory_max("max\n"), Ok(None));
        assert!(parse_memory_max("").is_err());
        assert!(parse_memory_max("512Mi\n").is_err());
        assert!(parse_memory_max("-1\n").is_err());
    }

    #[test]
    fn the_own_cgroup_comes_first_then_each_parent_up_to_the_root() {
        let root = Path::new("/cg");
        let v2 = |membership| own_cgroup(membership, str::is_empty);
        assert_eq!(
            cgroup_and_ancestors(root, v2("1:name=systemd:/x\n0::/kubepods/pod1/c1\n")),
            [
                "/cg/kubepods/pod1/c1",
                "/cg/kubepods/pod1",
                "/cg/kubepods",
                "/cg"
            ]
            .map(PathBuf::from)
        );
        // In a container's cgroup namespace, its own cgroup is the root.
        assert_eq!(
            cgroup_and_ancestors(root, v2("0::/\n")),
            [PathBuf::from("/cg")]
        );
        assert_eq!(
            cgroup_and_ancestors(root, v2("4:memory:/a\n")),
            [PathBuf::from("/cg")]
        );
        assert_eq!(
            cgroup_and_ancestors(root, v2("0::/../../other\n")),
            [PathBuf::from("/cg")]
        );
        // cgroup v1: the memory controller's line, wherever it is and whatever it shares.
        let memory = own_cgroup("3:cpu,cpuacct:/x\n9:blkio,memory:/kubepods/p\n", |list| {
            list.split(',').any(|c| c == "memory")
        });
        assert_eq!(memory, Some("/kubepods/p"));
    }

    #[test]
    fn the_limit_is_the_smallest_memory_max_on_the_way_up() {
        let root = std::env::temp_dir().join(format!("cgroup-{}", uuid::Uuid::new_v4()));
        let pod = root.join("kubepods/pod1");
        let container = pod.join("c1");
        std::fs::create_dir_all(&container).unwrap();
        let membership = "0::/kubepods/pod1/c1\n";
        // No memory.max anywhere: no limit known.
        assert_eq!(memory_limit_of(&root, membership).unwrap(), None);
        std::fs::write(container.join("memory.max"), "max\n").unwrap();
        assert_eq!(memory_limit_of(&root, membership).unwrap(), None);
        std::fs::write(pod.join("memory.max"), "1073741824\n").unwrap();
        assert_eq!(
            memory_limit_of(&root, membership).unwrap(),
            Some(1024 * MIB)
        );
        std::fs::write(container.join("memory.max"), "536870912\n").unwrap();
        assert_eq!(memory_limit_of(&root, membership).unwrap(), Some(512 * MIB));
        // A container in its own cgroup namespace sees its cgroup at the root.
        std::fs::write(root.join("memory.max"), "268435456\n").unwrap();
        assert_eq!(memory_limit_of(&root, "0::/\n").unwrap(), Some(256 * MIB));
        std::fs::write(root.join("memory.max"), "lots\n").unwrap();
        let error = memory_limit_of(&root, "0::/\n").unwrap_err().to_string();
        assert!(
            error.contains("memory.max") && error.contains("lots"),
            "{error}"
        );
        // No cgroup file system at all.
        assert_eq!(
            memory_limit_of(&root.join("absent"), membership).unwrap(),
            None
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn cgroup_v1_limits_count_when_there_is_no_v2_limit() {
        let root = std::env::temp_dir().join(format!("cgroup-{}", uuid::Uuid::new_v4()));
        let memory = root.join("memory");
        let pod = memory.join("kubepods/pod1");
        let container = pod.join("c1");
        std::fs::create_dir_all(&container).unwrap();
        let membership = "11:cpuset:/kubepods/pod1/c1\n4:memory:/kubepods/pod1/c1\n";
        let unlimited = "9223372036854771712\n";
        std::fs::write(memory.join("memory.limit_in_bytes"), unlimited).unwrap();
        std::fs::write(container.join("memory.limit_in_bytes"), unlimited).unwrap();
        assert_eq!(memory_limit_of(&root, membership).unwrap(), None);
        std::fs::write(pod.join("memory.limit_in_bytes"), "536870912\n").unwrap();
        assert_eq!(memory_limit_of(&root, membership).unwrap(), Some(512 * MIB));
        // A container without a cgroup namespace: the host's path is not under its mount,
        // whose root is the container's own cgroup.
        std::fs::write(memory.join("memory.limit_in_bytes"), "268435456\n").unwrap();
        let host_path = "4:memory:/kubepods/burstable/pod9/abc\n";
        assert_eq!(memory_limit_of(&root, host_path).unwrap(), Some(256 * MIB));
        // A v2 limit, where there is one, is the one that counts.
        std::fs::write(root.join("memory.max"), "1073741824\n").unwrap();
        assert_eq!(
            memory_limit_of(&root, "0::/\n4:memory:/\n").unwrap(),
            Some(1024 * MIB)
        );
        std::fs::remove_file(root.join("memory.max")).unwrap();
        std::fs::write(memory.join("memory.limit_in_bytes"), "-1\n").unwrap();
        let error = memory_limit_of(&root, "4:memory:/\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("memory.limit_in_bytes"), "{error}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_default_is_the_cpus_but_one_unless_memory_is_shorter() {
        assert_eq!(default_workers(4, None), 3);
        assert_eq!(default_workers(2, None), 1);
        // One CPU: it hashes too, or no sign-in would ever be served.
        assert_eq!(default_workers(1, None), 1);
        // 512 MiB: (512 - 64) / 19 = 23 workers fit.
        assert_eq!(default_workers(32, Some(512 * MIB)), 23);
        assert_eq!(default_workers(24, Some(512 * MIB)), 23);
        assert_eq!(default_workers(2, Some(512 * MIB)), 1);
        assert_eq!(default_workers(8, Some(BASE_BYTES + 3 * BLOCK_BYTES)), 3);
        assert_eq!(
            default_workers(8, Some(BASE_BYTES + 3 * BLOCK_BYTES - 1)),
            2
        );
        // Too little for one: one, which the check then refuses.
        assert_eq!(default_workers(8, Some(32 * MIB)), 1);
        assert!(check(1, Some(32 * MIB)).is_err());
    }

    #[test]
    fn workers_fit_or_the_check_says_how_many_would() {
        assert_eq!(check(1000, None), Ok(()));
        assert_eq!(check(23, Some(512 * MIB)), Ok(()));
        assert_eq!(check(2, Some(needed(2))), Ok(()));
        let error = check(24, Some(512 * MIB)).unwrap_err();
        assert!(
            error.contains("520 MiB")
                && error.contains("512 MiB")
                && error.contains("AUTH_HASH_WORKERS to at most 23"),
            "{error}"
        );
    }
}
