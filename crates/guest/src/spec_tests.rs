use super::*;

#[test]
fn sizes() {
    assert_eq!(parse_size("4096"), Ok(4096));
    assert_eq!(parse_size("64K"), Ok(64 << 10));
    assert_eq!(parse_size("64M"), Ok(64 << 20));
    assert_eq!(parse_size("1G"), Ok(1 << 30));
    assert_eq!(parse_size("2GiB"), Ok(2 << 30));
    assert!(parse_size("").is_err());
    assert!(parse_size("12X").is_err());
    assert!(parse_size("M").is_err());
    assert!(parse_size("99999999999999G").is_err());
}

#[test]
fn memtouch_defaults() {
    assert_eq!(
        parse_workload("memtouch:wss=64M"),
        Ok(Workload::Memtouch(MemtouchSpec {
            wss_bytes: 64 << 20,
            rate: Rate::Max,
            pattern: Pattern::Random
        }))
    );
}

#[test]
fn memtouch_full() {
    let w = parse_workload("memtouch:wss=1G,rate=5000,pattern=seq").unwrap();
    assert_eq!(
        w,
        Workload::Memtouch(MemtouchSpec {
            wss_bytes: 1 << 30,
            rate: Rate::PagesPerSec(5000),
            pattern: Pattern::Sequential
        })
    );
    assert_eq!(w.pages(), 262144);
    assert_eq!(w.name(), "memtouch");
}

#[test]
fn memtouch_errors() {
    assert!(matches!(
        parse_workload("memtouch"),
        Err(SpecError::MissingParam { .. })
    ));
    assert!(parse_workload("memtouch:wss=64M,rate=0").is_err());
    assert!(parse_workload("memtouch:wss=64M,rate=9999999999").is_ok());
    let err = parse_workload("memtouch:wss=64M,rate=10000000000").unwrap_err();
    assert!(err.to_string().contains("from 1 to 9999999999"), "{err}");
    assert!(err.to_string().contains(&MAX_RATE_PAGES_PER_S.to_string()));
    let err = parse_workload("memtouch:wss=0M").unwrap_err().to_string();
    assert!(err.contains("\"0M\""), "the value as typed: {err}");
    assert!(parse_workload("memtouch:wss=64M,rate=fast").is_err());
    assert!(parse_workload("memtouch:wss=64M,pattern=zigzag").is_err());
    assert!(parse_workload("memtouch:wss=64M,bogus=1").is_err());
    assert!(parse_workload("memtouch:wss=100").is_err());
}

#[test]
fn disk_specs() {
    assert_eq!(
        parse_workload("disk:wss=16M,rate=200"),
        Ok(Workload::Disk(DiskSpec {
            wss_bytes: 16 << 20,
            rate: Rate::PagesPerSec(200),
            pattern: Pattern::Random,
            read_pct: DEFAULT_DISK_READ_PCT,
        }))
    );
    let w = parse_workload("disk:wss=1G,rate=max,pattern=seq,read=0").unwrap();
    assert_eq!(w.to_string(), "disk:wss=1G,rate=max,pattern=seq,read=0");
    assert_eq!(
        (w.name(), w.pages(), w.disk_wss_bytes()),
        ("disk", 0, 1 << 30)
    );
    let err = |s: &str| parse_workload(s).unwrap_err().to_string();
    assert!(err("disk:rate=10").contains("needs parameter wss"));
    assert!(err("disk:wss=16M").contains("needs parameter rate"));
    assert!(err("disk:wss=6K,rate=1").contains("4 KiB disk blocks"));
    assert!(err("disk:wss=0,rate=1").contains("4 KiB disk blocks"));
    assert!(err("disk:wss=16M,rate=0").contains("from 1 to"));
    assert!(err("disk:wss=16M,rate=1,read=101").contains("0..=100"));
    assert!(err("disk:wss=16M,rate=1,read=-1").contains("0..=100"));
    assert!(err("disk:wss=16M,rate=1,pattern=zig").contains("random or seq"));
    assert!(err("disk:wss=16M,rate=1,size=2").contains("\"size\""));
}

/// A disk rate is block operations, a memtouch rate pages; a size refusal lists exactly the
/// units the parser reads.
#[test]
fn refusals_say_the_workloads_unit() {
    let err = |s: &str| parse_workload(s).unwrap_err().to_string();
    let disk = err("disk:wss=16M,rate=0");
    assert!(
        disk.contains("block operations (4 KiB blocks) per second"),
        "{disk}"
    );
    assert!(!disk.contains("pages"), "{disk}");
    assert!(err("memtouch:wss=16M,rate=0").contains("pages per second"));
    let units = err("disk:wss=16X,rate=1");
    assert!(
        units.contains("none or B for bytes, or K, M or G"),
        "{units}"
    );
    assert!(
        units.contains("followed by B or iB, in any case"),
        "{units}"
    );
    // Every spelling that message lists is read.
    for unit in [
        "", "B", "k", "K", "KB", "KiB", "m", "M", "MB", "MiB", "g", "G", "gb", "GiB",
    ] {
        assert!(parse_size(&format!("4{unit}")).is_ok(), "{unit}");
    }
    for unit in ["T", "KI", "Kib2", "bytes"] {
        assert!(parse_size(&format!("4{unit}")).is_err(), "{unit}");
    }
}

/// One rule for every workload: each parameter once, in the grammar's order.
#[test]
fn parameters_come_once_and_in_order() {
    let err = |s: &str| parse_workload(s).unwrap_err();
    assert_eq!(
        err("disk:wss=16M,rate=1,read=5,read=6"),
        SpecError::RepeatedParam {
            workload: "disk",
            param: "read"
        }
    );
    assert_eq!(
        err("disk:wss=16M,rate=1,read=5,pattern=seq").to_string(),
        "parameter pattern must come before read for workload disk: expected the order \
         wss, rate, pattern, read"
    );
    assert_eq!(
        err("memtouch:wss=16M,pattern=seq,rate=5").to_string(),
        "parameter rate must come before pattern for workload memtouch: expected the \
         order wss, rate, pattern"
    );
    assert!(matches!(
        err("memtouch:wss=16M,wss=32M"),
        SpecError::RepeatedParam { param: "wss", .. }
    ));
    assert!(matches!(
        err("cpu:demand=5,demand=6"),
        SpecError::RepeatedParam {
            param: "demand",
            ..
        }
    ));
    assert!(matches!(
        err("net:rate=1M,dir=in,peer=10.0.0.1"),
        SpecError::ParamOrder {
            param: "dir",
            must_precede: "rate",
            ..
        }
    ));
    assert!(matches!(
        err("net:dir=in,rate=1M,peer=10.0.0.1,port=1,port=2"),
        SpecError::RepeatedParam { param: "port", .. }
    ));
    // Skipping optional parameters keeps the order.
    assert!(parse_workload("disk:wss=16M,rate=1,read=5").is_ok());
    assert!(parse_workload("memtouch:wss=16M,pattern=seq").is_ok());
}

#[test]
fn cpu_and_idle() {
    assert_eq!(
        parse_workload("cpu:demand=50"),
        Ok(Workload::Cpu { demand_pct: 50 })
    );
    assert_eq!(
        parse_workload("cpu:demand=100%"),
        Ok(Workload::Cpu { demand_pct: 100 })
    );
    assert!(parse_workload("cpu:demand=101").is_err());
    assert!(parse_workload("cpu").is_err());
    assert_eq!(parse_workload("idle"), Ok(Workload::Idle));
    assert!(parse_workload("idle:x=1").is_err());
    assert!(matches!(
        parse_workload("fork-bomb"),
        Err(SpecError::UnknownWorkload(_))
    ));
}

#[test]
fn canonical_specs_read_back_the_same() {
    for spec in [
        "idle",
        "cpu:demand=0",
        "cpu:demand=100%",
        "memtouch:wss=64M",
        "memtouch:wss=1G,rate=5000,pattern=seq",
        "memtouch:wss=1536M,pattern=rand",
        "memtouch:wss=12K,rate=max",
        "memtouch:wss=4100",
        "memtouch:wss=2GiB",
        "disk:wss=16M,rate=200",
        "disk:wss=64K,rate=max,pattern=seq,read=100",
        "net:dir=out,rate=1M,peer=198.18.0.250",
        "net:dir=both,rate=1536K,peer=198.18.0.250,port=80",
    ] {
        let w = parse_workload(spec).unwrap();
        let canonical = w.to_string();
        assert_eq!(parse_workload(&canonical), Ok(w), "{spec} -> {canonical}");
        assert!(
            canonical
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ":=,.".contains(c)),
            "{canonical}"
        );
    }
    assert_eq!(
        parse_workload("memtouch:wss=64M").unwrap().to_string(),
        "memtouch:wss=64M,rate=max,pattern=random"
    );
    assert_eq!(
        parse_workload("memtouch:wss=1536M,rate=7,pattern=seq")
            .unwrap()
            .to_string(),
        "memtouch:wss=1536M,rate=7,pattern=seq"
    );
    assert_eq!(format_size(1 << 30), "1G");
    assert_eq!(format_size(0), "0");
}

#[test]
fn net_specs() {
    assert_eq!(
        parse_workload("net:dir=in,rate=2M,peer=198.18.0.250"),
        Ok(Workload::Net {
            dir: Direction::In,
            rate_bps: 2 << 20,
            peer: Ipv4Addr::new(198, 18, 0, 250),
            port: DEFAULT_NET_PORT,
        })
    );
    assert_eq!(
        parse_workload("net:dir=out,rate=1K,peer=10.0.0.1,port=99")
            .unwrap()
            .to_string(),
        "net:dir=out,rate=1K,peer=10.0.0.1,port=99"
    );
    let err = |s: &str| parse_workload(s).unwrap_err().to_string();
    assert!(err("net:rate=1M,peer=10.0.0.1").contains("needs parameter dir"));
    assert!(err("net:dir=in,peer=10.0.0.1").contains("needs parameter rate"));
    assert!(err("net:dir=in,rate=1M").contains("needs parameter peer"));
    assert!(err("net:dir=up,rate=1M,peer=10.0.0.1").contains("in, out or both"));
    assert!(err("net:dir=in,rate=1023,peer=10.0.0.1").contains("from 1K to 1G"));
    assert!(err("net:dir=in,rate=2G,peer=10.0.0.1").contains("from 1K to 1G"));
    assert!(err("net:dir=in,rate=1M,peer=host").contains("IPv4"));
    assert!(err("net:dir=in,rate=1M,peer=255.255.255.255").contains("unicast"));
    assert!(err("net:dir=in,rate=1M,peer=10.0.0.1,port=0").contains("1..=65535"));
    assert!(err("net:dir=in,rate=1M,peer=10.0.0.1,port=65536").contains("1..=65535"));
    assert!(err("net:dir=in,rate=1M,peer=10.0.0.1,mtu=9").contains("\"mtu\""));
    assert_eq!(Direction::Both.ways(), 2);
    assert!(Direction::In.receives() && !Direction::In.sends());
}

#[test]
fn cmdline() {
    let c =
        "console=ttyS0 quiet drover.workload=memtouch:wss=32M,rate=max drover.metrics=/dev/ttyS1\n";
    assert_eq!(
        cmdline_param(c, "drover.workload"),
        Some("memtouch:wss=32M,rate=max")
    );
    assert_eq!(cmdline_param(c, "drover.metrics"), Some("/dev/ttyS1"));
    assert_eq!(cmdline_param(c, "drover.nothing"), None);
    assert_eq!(cmdline_param("a=1 a=2", "a"), Some("2"));
}

#[test]
fn mixed_specs_read_each_part_by_its_rules() {
    let w = parse_workload("memtouch:wss=64M,rate=2000+disk:wss=16M,rate=200,read=50").unwrap();
    assert_eq!(
        w,
        Workload::Mixed {
            memtouch: MemtouchSpec {
                wss_bytes: 64 << 20,
                rate: Rate::PagesPerSec(2000),
                pattern: Pattern::Random,
            },
            disk: DiskSpec {
                wss_bytes: 16 << 20,
                rate: Rate::PagesPerSec(200),
                pattern: Pattern::Random,
                read_pct: 50,
            },
        }
    );
    assert_eq!(
        (w.name(), w.pages(), w.disk_wss_bytes()),
        ("memtouch+disk", 16384, 16 << 20)
    );
    let canonical = w.to_string();
    assert_eq!(
        canonical,
        "memtouch:wss=64M,rate=2000,pattern=random+disk:wss=16M,rate=200,pattern=random,read=50"
    );
    assert_eq!(parse_workload(&canonical), Ok(w));
}

#[test]
fn mixed_refusals_name_the_part_and_the_parameter() {
    let err = |s: &str| parse_workload(s).unwrap_err().to_string();
    // Each part's own rules, the part named.
    assert_eq!(
        err("memtouch:wss=64M,rate=0+disk:wss=16M,rate=1"),
        "in the memtouch part of a memtouch+disk workload: bad value \"0\" for rate: expected \
         pages per second from 1 to 9999999999, or max"
    );
    let e = err("memtouch:wss=64M,rate=5+disk:wss=16M,rate=5,read=101");
    assert!(e.starts_with("in the disk part of"), "{e}");
    assert!(e.contains("\"101\" for read"), "{e}");
    let e = err("memtouch:wss=64M,rate=5+disk:wss=16M");
    assert!(e.ends_with("workload disk needs parameter rate"), "{e}");
    let e = err("memtouch:wss=64M,rate=5+disk:rate=5,wss=1M");
    assert!(
        e.contains("disk part") && e.contains("parameter wss must come before rate"),
        "{e}"
    );
    // Each part paced: a rate given, never max.
    let e = err("memtouch:wss=64M+disk:wss=16M,rate=5");
    assert_eq!(
        e,
        "in the memtouch part of a memtouch+disk workload: workload memtouch needs parameter rate"
    );
    let e = err("memtouch:wss=64M,rate=5+disk:wss=16M,rate=max");
    assert!(
        e.starts_with("in the disk part") && e.contains("\"max\" for rate"),
        "{e}"
    );
    assert!(e.contains("share one thread"), "{e}");
    // A memory part then a disk part, nothing else.
    for (spec, kinds) in [
        (
            "disk:wss=16M,rate=5+memtouch:wss=64M,rate=5",
            "disk+memtouch",
        ),
        (
            "memtouch:wss=64M,rate=5+memtouch:wss=64M,rate=5",
            "memtouch+memtouch",
        ),
        ("cpu:demand=5+disk:wss=16M,rate=5", "cpu+disk"),
        (
            "memtouch:wss=64M,rate=5+disk:wss=16M,rate=5+disk:wss=1M,rate=1",
            "memtouch+disk+disk",
        ),
        ("memtouch:wss=64M,rate=5+", "memtouch+"),
        ("+", "+"),
    ] {
        assert_eq!(
            parse_workload(spec),
            Err(SpecError::BadMix {
                kinds: kinds.into()
            }),
            "{spec}"
        );
    }
    assert!(err("idle+idle").contains("expected a memtouch part then a disk part"));
}

/// Specs from pieces of the grammar, joined and cut at random: each parses or is refused,
/// never a panic, and what parses prints back to itself.
#[test]
fn arbitrary_specs_never_panic() {
    const PIECES: [&str; 24] = [
        "memtouch",
        "disk",
        "cpu",
        "net",
        "idle",
        ":",
        "+",
        ",",
        "=",
        "wss",
        "rate",
        "read",
        "pattern",
        "demand",
        "64M",
        "0",
        "max",
        "seq",
        "99999999999999999999G",
        "1",
        "",
        "\u{e9}",
        "peer",
        "dir",
    ];
    // A fixed linear congruential sequence: this module is in the library too, without the
    // workloads' generator.
    let mut state: u64 = 12;
    let mut below = |n: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % n
    };
    for _ in 0..20_000 {
        let n = below(12) as usize;
        let spec: String = (0..n)
            .map(|_| PIECES[below(PIECES.len() as u64) as usize])
            .collect();
        if let Ok(w) = parse_workload(&spec) {
            assert_eq!(parse_workload(&w.to_string()), Ok(w), "{spec:?}");
        }
    }
}
