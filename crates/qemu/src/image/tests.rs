use super::*;
use std::cell::RefCell;

use cpio::tests::parse;
use modules::tests::write_virtio_tree;

const VERSION: &str = "9.9.0-test-cloud-amd64";

#[derive(Default)]
struct Recorder(RefCell<Vec<String>>);

impl Progress for Recorder {
    fn stage(&self, name: &str, total: u64) {
        self.0.borrow_mut().push(format!("{name}:{total}"));
    }
    fn advance(&self, _n: u64) {}
    fn finish(&self) {
        self.0.borrow_mut().push("finish".into());
    }
}

fn fake_sources(root: &Path) -> Sources {
    let pkg = root.join("kernel-pkg/unpacked");
    std::fs::create_dir_all(pkg.join("boot")).unwrap();
    std::fs::write(pkg.join(format!("boot/vmlinuz-{VERSION}")), b"fake kernel").unwrap();
    write_virtio_tree(&pkg.join("lib/modules").join(VERSION));
    // Not executable, so `--list` fails and the fallback applet list is used.
    let busybox = root.join("busybox");
    std::fs::write(&busybox, elf::fake_elf(&[], false)).unwrap();
    Sources {
        kernel_pkg: pkg,
        busybox,
    }
}

#[test]
fn builds_a_bootable_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fake_sources(tmp.path());
    let out = tmp.path().join("image");
    let rec = Recorder::default();
    let img = build_from(&src, &out, &rec).unwrap();
    assert_eq!(img.kernel, out.join("vmlinuz"));
    assert_eq!(std::fs::read(&img.kernel).unwrap(), b"fake kernel");
    let stages = rec.0.borrow().clone();
    assert_eq!(stages[0], "modules:10");
    assert!(stages[1].starts_with("initramfs:"));
    assert_eq!(stages[2], "kernel:11");
    assert_eq!(stages[3], "finish");

    let entries = parse(&std::fs::read(&img.initrd).unwrap());
    let get = |n: &str| entries.iter().find(|e| e.0 == n);
    let init = String::from_utf8(get("init").unwrap().4.clone()).unwrap();
    assert!(init.contains("kernel/drivers/net/virtio_net.ko"));
    assert_eq!(get("bin/drover-guest").unwrap().4, GUEST_BINARY);
    assert_eq!(get("bin/sh").unwrap().4, b"busybox");
    assert_eq!(get("bin/stty").unwrap().4, b"busybox");
    assert!(get("dev/console").is_some());
    let modroot = format!("lib/modules/{VERSION}");
    assert!(get(&format!("{modroot}/kernel/drivers/char/virtio_console.ko")).is_some());
    assert!(get(&format!("{modroot}/modules.dep")).is_some());
    // Every entry's parent directory comes before it.
    for (i, e) in entries.iter().enumerate() {
        if let Some(parent) = Path::new(&e.0)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            let p = parent.to_str().unwrap();
            let pos = entries.iter().position(|x| x.0 == p);
            assert!(pos.is_some_and(|pos| pos < i), "{} before its parent", e.0);
        }
    }
    // The guest binary was built static for musl.
    assert!(!elf::is_dynamic(GUEST_BINARY).unwrap());
}

#[test]
fn second_build_is_a_no_op_and_input_changes_rebuild() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fake_sources(tmp.path());
    let out = tmp.path().join("image");
    build_from(&src, &out, &NoProgress).unwrap();
    let manifest = std::fs::read(out.join(MANIFEST_NAME)).unwrap();

    let rec = Recorder::default();
    build_from(&src, &out, &rec).unwrap();
    assert_eq!(*rec.0.borrow(), vec!["finish".to_string()]);

    // A damaged output is rebuilt.
    std::fs::write(out.join(INITRD_NAME), b"short").unwrap();
    let rec = Recorder::default();
    build_from(&src, &out, &rec).unwrap();
    assert_eq!(rec.0.borrow().len(), 4);

    // A new kernel changes the stamp.
    let k = src.kernel_pkg.join(format!("boot/vmlinuz-{VERSION}"));
    std::fs::write(&k, b"another fake kernel").unwrap();
    build_from(&src, &out, &NoProgress).unwrap();
    assert_ne!(std::fs::read(out.join(MANIFEST_NAME)).unwrap(), manifest);
    assert_eq!(
        std::fs::read(out.join(KERNEL_NAME)).unwrap(),
        b"another fake kernel"
    );
    // No temporary files left behind.
    let names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[test]
fn clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let src = Sources {
        kernel_pkg: tmp.path().join("nothing"),
        busybox: tmp.path().join("busybox"),
    };
    let e = build_from(&src, &tmp.path().join("out"), &NoProgress).unwrap_err();
    assert!(e.to_string().contains("run scripts/setup first"), "{e}");

    let mut src = fake_sources(tmp.path());
    std::fs::write(&src.busybox, elf::fake_elf(&[], true)).unwrap();
    let e = build_from(&src, &tmp.path().join("out"), &NoProgress).unwrap_err();
    assert!(matches!(e, ImageError::BusyboxDynamic(_)), "{e}");

    src.busybox = tmp.path().join("ghost");
    let e = build_from(&src, &tmp.path().join("out"), &NoProgress).unwrap_err();
    assert!(e.to_string().contains("ghost"), "{e}");

    let modules = src.kernel_pkg.join("lib/modules").join(VERSION);
    std::fs::remove_file(modules.join("kernel/drivers/block/virtio_blk.ko")).unwrap();
    let e = build_from(&src, &tmp.path().join("out"), &NoProgress).unwrap_err();
    assert!(e.to_string().contains("virtio_blk"), "{e}");
}

#[test]
fn cache_dir_precedence() {
    let p = |s: &str| Some(PathBuf::from(s));
    assert_eq!(
        cache_dir_from(p("/c"), p("/x"), p("/h")).unwrap(),
        PathBuf::from("/c")
    );
    assert_eq!(
        cache_dir_from(None, p("/x"), p("/h")).unwrap(),
        PathBuf::from("/x/drover")
    );
    assert_eq!(
        cache_dir_from(None, None, p("/h")).unwrap(),
        PathBuf::from("/h/.cache/drover")
    );
    assert!(matches!(
        cache_dir_from(None, None, None),
        Err(ImageError::NoCacheDir)
    ));
}

#[test]
fn cmdline_carries_the_workload() {
    let c = kernel_cmdline("memtouch:wss=64M,rate=max");
    assert!(c.starts_with("console=ttyS0 "));
    assert!(c.ends_with(" drover.workload=memtouch:wss=64M,rate=max"));
}

#[test]
fn fnv_is_stable() {
    let mut h = Fnv::new();
    h.bytes(b"a");
    assert_eq!(h.0, 0xaf63_dc4c_8601_ec8c);
}

#[test]
fn pruning_removes_only_other_builds_unused_for_a_week() {
    let cache = tempfile::tempdir().unwrap();
    let age = |dir: &std::path::Path, secs: u64| {
        std::fs::create_dir_all(dir).unwrap();
        let manifest = std::fs::File::create(dir.join(MANIFEST_NAME)).unwrap();
        let when = std::time::SystemTime::now() - std::time::Duration::from_secs(secs);
        manifest.set_modified(when).unwrap();
    };
    let week = STALE_IMAGE_AGE.as_secs();
    let own = image_dir_in(cache.path());
    let old = cache.path().join("image-0123456789abcdef-v1");
    let recent = cache.path().join("image-fedcba9876543210-v1");
    let not_an_image = cache.path().join("kernel");
    let legacy = cache.path().join("image");
    age(&legacy, week + 3600);
    age(&own, week + 3600);
    age(&old, week + 3600);
    age(&recent, week - 3600);
    age(&not_an_image, week + 3600);
    prune_stale_images(cache.path());
    assert!(own.is_dir(), "this build's image is never pruned");
    assert!(
        !old.exists(),
        "another build's image unused for over a week goes"
    );
    assert!(recent.is_dir(), "a recently used image stays");
    assert!(
        !legacy.exists(),
        "the former shared directory goes once unused"
    );
    assert!(not_an_image.is_dir(), "only image-* directories are pruned");
}
