use super::*;

fn link(text: &str) -> WanLink {
    WanLink::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[test]
fn a_pair_with_rate_and_delay_parses() {
    let l = link("h1-h2=100Mbit/s,50ms");
    assert_eq!((l.a, l.b), (1, 2));
    assert_eq!(l.rate.rate_bytes_per_sec, 12_500_000);
    assert_eq!((l.delay_us, l.jitter_us), (50_000, 0));
    assert_eq!(l.pair(), "h1-h2");
}

#[test]
fn jitter_spaces_and_the_pair_order_are_accepted() {
    let l = link("h3-h1=1Gbit/s, 0.5s, jitter=500us");
    assert_eq!((l.a, l.b), (1, 3));
    assert_eq!((l.delay_us, l.jitter_us), (500_000, 500));
    assert_eq!(link("h1-h2=10MB/s,1s").delay_us, 1_000_000);
}

#[test]
fn bad_specs_say_what_was_expected() {
    let cases = [
        ("h1-h2", WanError::Shape("h1-h2".into())),
        ("h1-h2=100Mbit/s", WanError::Shape("h1-h2=100Mbit/s".into())),
        ("h1=1Gbit/s,5ms", WanError::Pair("h1".into())),
        ("h1-h1=1Gbit/s,5ms", WanError::Pair("h1-h1".into())),
        (
            "h0-h1=1Gbit/s,5ms",
            WanError::Host {
                pair: "h0-h1".into(),
                host: "h0".into(),
            },
        ),
        (
            "h1-h2=1Gbit/s,50",
            WanError::Duration {
                what: "delay",
                text: "50".into(),
            },
        ),
        (
            "h1-h2=1Gbit/s,50m",
            WanError::Duration {
                what: "delay",
                text: "50m".into(),
            },
        ),
        (
            "h1-h2=1Gbit/s,11s",
            WanError::DurationRange {
                what: "delay",
                text: "11s".into(),
            },
        ),
        (
            "h1-h2=1Gbit/s,5ms,jitter=6ms",
            WanError::Jitter {
                jitter: "6ms".into(),
                delay: "5ms".into(),
            },
        ),
        (
            "h1-h2=1Gbit/s,5ms,loss=1%",
            WanError::Option("loss=1%".into()),
        ),
    ];
    for (text, want) in cases {
        assert_eq!(WanLink::parse(text), Err(want), "{text}");
    }
    let e = WanLink::parse("h1-h2=fast,5ms").unwrap_err().to_string();
    assert!(e.starts_with("rate 'fast': "), "{e}");
    // Below the agents' floor: the message says the floor.
    let e = WanLink::parse("h1-h2=1kbit,5ms").unwrap_err().to_string();
    assert!(e.contains("at least 125000 bytes/s"), "{e}");
    assert!(WanError::Shape("x".into())
        .to_string()
        .contains(WAN_EXPECTED));
}

#[test]
fn pairs_are_checked_against_the_lab() {
    let l12 = link("h1-h2=100Mbit/s,50ms");
    let l23 = link("h2-h3=100Mbit/s,50ms");
    assert_eq!(validate_links(&[l12, l23], 3), Ok(()));
    assert_eq!(
        validate_links(&[l12, l23], 2),
        Err(WanError::NoSuchHost {
            a: 2,
            b: 3,
            hosts: 2
        })
    );
    let again = link("h2-h1=1Gbit/s,1ms");
    assert_eq!(
        validate_links(&[l12, again], 2),
        Err(WanError::Duplicate { a: 1, b: 2 })
    );
}

#[test]
fn the_queue_holds_twice_the_bytes_in_flight() {
    let l = link("h1-h2=100Mbit/s,50ms,jitter=10ms");
    // 12.5 MB/s * 60 ms = 750 kB in flight, doubled, plus tbf's burst.
    assert_eq!(l.queue_bytes(), 1_500_000 + l.rate.burst_bytes);
    assert_eq!(link("h1-h2=1Mbit/s,1ms").queue_bytes(), MIN_QUEUE_BYTES);
    let d = l.delay_spec();
    assert_eq!((d.delay_us, d.jitter_us, d.seed), (50_000, 10_000, 1002));
}

fn lines(steps: &[Step]) -> Vec<String> {
    steps.iter().map(|s| s.action.to_string()).collect()
}

#[test]
fn each_pair_gets_tuns_a_line_and_routes_in_that_order() {
    let lab = LabName::new("t").unwrap();
    let env = PlanEnv::sample();
    let launch = vec!["/bin/drover".to_string(), "lab".into(), "delay-line".into()];
    let l = link("h1-h2=100Mbit/s,50ms");
    let (steps, states) = wan_steps(&lab, &env, &[l], &launch, Duration::from_secs(5));
    let text = lines(&steps);
    let pos = |needle: &str| {
        text.iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not in {text:#?}"))
    };
    let tun1 = pos("ip -n drvt-h1 tuntap add dev wan-h2 mode tun");
    let tbf1 = pos("tc -n drvt-h1 qdisc add dev wan-h2 root tbf rate 100000000bit");
    let tun2 = pos("ip -n drvt-h2 tuntap add dev wan-h1 mode tun");
    let no_v6 = pos("ip -n drvt-h1 link set dev wan-h2 addrgenmode none");
    assert!(tbf1 < no_v6 && no_v6 < pos("ip -n drvt-h1 link set wan-h2 up"));
    let spawn = pos("start wan-h1-h2");
    let wait = pos("wait for delay line h1-h2");
    let r1 = pos("ip -n drvt-h1 route add 198.18.0.12/32 dev wan-h2 src 198.18.0.11");
    let r2 = pos("ip -n drvt-h2 route add 198.18.0.11/32 dev wan-h1 src 198.18.0.12");
    assert!(tun1 < tbf1 && tbf1 < tun2 && tun2 < spawn);
    assert!(spawn < wait && wait < r1 && r1 < r2);
    // The line runs in h1's namespace (in no host's cgroup), and is killed with it on rollback.
    let spawn_step = &steps[spawn];
    let Action::Spawn { argv, .. } = &spawn_step.action else {
        panic!("{spawn_step:?}")
    };
    assert_eq!(argv[..4], ["ip", "netns", "exec", "drvt-h1"]);
    assert!(!argv.iter().any(|a| a.contains("cgroup")), "{argv:?}");
    assert!(argv.ends_with(&[
        "/bin/drover".into(),
        "lab".into(),
        "delay-line".into(),
        "/run/drover/lab/drover/wan-h1-h2.json".into()
    ]));
    assert_eq!(spawn_step.undo, Some(Action::KillNetns("drvt-h1".into())));
    let s = &states[0];
    assert_eq!(s.config.a.netns, "drvt-h1");
    assert_eq!(s.config.b.tun, "wan-h1");
    assert_eq!(s.spawn_key(), "wan-h1-h2");
    assert_eq!(find_pair(&states, "h2-h1").unwrap(), s);
    assert_eq!(
        find_pair(&states, "h1-h3"),
        Err(WanError::NotConfigured {
            pair: "h1-h3".into(),
            have: "h1-h2".into()
        })
    );
    // The config the line reads is what the state file records.
    let Some(Action::Write { contents, .. }) = steps
        .iter()
        .map(|s| &s.action)
        .find(|a| matches!(a, Action::Write { path, .. } if path.ends_with("wan-h1-h2.json")))
    else {
        panic!("no config write in {text:#?}")
    };
    let read: LineConfig = serde_json::from_str(contents).unwrap();
    assert_eq!(read, s.config);
}

#[test]
fn no_pairs_no_steps() {
    let lab = LabName::new("t").unwrap();
    let (steps, states) = wan_steps(&lab, &PlanEnv::sample(), &[], &[], Duration::from_secs(1));
    assert!(steps.is_empty() && states.is_empty());
}

#[test]
fn durations_need_a_unit() {
    assert_eq!(parse_duration("d", "5ms"), Ok(Duration::from_millis(5)));
    assert_eq!(parse_duration("d", "1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("d", "250us"), Ok(Duration::from_micros(250)));
    assert_eq!(parse_duration("d", "1e3ms"), Ok(Duration::from_secs(1)));
    assert_eq!(parse_duration("d", "10s"), Ok(MAX_DELAY));
    assert_eq!(parse_duration("d", "-0ms"), Ok(Duration::ZERO));
    for bad in ["", "5", "5 min", "50m"] {
        let want = WanError::Duration {
            what: "d",
            text: bad.into(),
        };
        assert_eq!(parse_duration("d", bad), Err(want), "{bad}");
    }
    // A unit is there: the message is about the number, not the unit.
    for bad in ["-5ms", "-1s", "ms", "fastms", "nans", "1.2.3s"] {
        let want = WanError::DurationNumber {
            what: "d",
            text: bad.into(),
        };
        assert_eq!(parse_duration("d", bad), Err(want), "{bad}");
    }
    for bad in ["1e99s", "10001ms", "infs", "11s"] {
        let want = WanError::DurationRange {
            what: "d",
            text: bad.into(),
        };
        assert_eq!(parse_duration("d", bad), Err(want), "{bad}");
    }
    let e = WanLink::parse("h1-h2=1Gbit/s,-5ms")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "delay '-5ms': expected a non-negative number before the unit, e.g. 50ms"
    );
    let e = WanLink::parse("h1-h2=1Gbit/s,5ms,jitter=1e99s")
        .unwrap_err()
        .to_string();
    assert_eq!(e, "jitter '1e99s': expected at most 10 s");
}

#[test]
fn a_repeated_option_is_refused_by_name() {
    let e = WanLink::parse("h1-h2=1Gbit/s,50ms,jitter=5ms,jitter=5ms");
    assert_eq!(e, Err(WanError::RepeatedOption("jitter".into())));
    assert!(e
        .unwrap_err()
        .to_string()
        .contains("'jitter' is given twice"));
    // An unknown option repeated is refused as unknown.
    assert_eq!(
        WanLink::parse("h1-h2=1Gbit/s,50ms,loss=1,loss=1"),
        Err(WanError::Option("loss=1".into()))
    );
}

#[test]
fn hosts_are_named_exactly_as_the_lab_names_them() {
    for (text, host) in [
        ("h01-h2", "h01"),
        ("h0-h2", "h0"),
        ("h1-H2", "H2"),
        ("h1-h", "h"),
        ("x1-h2", "x1"),
        ("h1-h+2", "h+2"),
    ] {
        let want = WanError::Host {
            pair: text.into(),
            host: host.into(),
        };
        assert_eq!(parse_pair(text), Err(want), "{text}");
    }
    let e = WanLink::parse("h0-h2=1Gbit/s,5ms").unwrap_err().to_string();
    assert_eq!(
        e,
        "unknown host 'h0' in 'h0-h2': the lab's hosts are h1, h2, ... \
         (h and a number from 1, no leading zeros)"
    );
    assert_eq!(parse_pair("h10-h2"), Ok((2, 10)));
    assert_eq!(
        find_pair(&[], "h1-h2"),
        Err(WanError::NotConfigured {
            pair: "h1-h2".into(),
            have: "none".into()
        })
    );
}
