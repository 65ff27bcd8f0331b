//! pgbench select-only through three paths, same machine, same run:
//! direct to the target, through Airlock (eBPF-redirected, transparent), and
//! through pgbouncer in session mode, the peer a team would otherwise deploy.

use std::{fs, path::Path};

use airlock_vm_tests::{Lab, run_as, set_mode, spawn_as};

use crate::median;

/// Seconds per pgbench run.
const SECONDS: &str = "4";
/// pgbouncer's loopback port.
const PGBOUNCER_PORT: &str = "16432";

struct Run {
    tps: f64,
    /// Transactions pgbench completed.
    transactions: u64,
    p50_us: f64,
    p99_us: f64,
}

/// CPU a proxy process spent per transaction, in µs: steadier than
/// throughput on a machine where the database and pgbench share its cores.
#[derive(Clone, Copy)]
struct Cpu {
    /// Every thread of the process.
    total: f64,
    /// Of that, the statement record writer (none in pgbouncer).
    records: f64,
}

fn cpu_per_transaction(pid: u32, run: impl FnOnce() -> Run) -> (Run, Cpu) {
    use airlock::proxy::postgres::recorder::THREAD_NAME as RECORDS_THREAD;
    use airlock_vm_tests::process::{cpu_time, thread_cpu_time};
    let (before, records_before) = (cpu_time(pid), thread_cpu_time(pid, RECORDS_THREAD));
    let run = run();
    let per = |used: std::time::Duration| used.as_secs_f64() * 1e6 / run.transactions.max(1) as f64;
    let cpu = Cpu {
        total: per(cpu_time(pid).saturating_sub(before)),
        records: per(thread_cpu_time(pid, RECORDS_THREAD).saturating_sub(records_before)),
    };
    (run, cpu)
}

/// Which PostgreSQL measurements to take.
#[derive(PartialEq, Eq)]
pub enum Parts {
    /// pgbench against the peers, new connections, masked results of both sizes.
    All,
    /// Only 1,000-row results (with and without masking).
    LargeResults,
    /// Only one-row results (with and without masking).
    SmallResults,
    /// Only pgbench against the peers.
    Pgbench,
}

pub fn run(parts: Parts) {
    let mut lab = Lab::new(&["pgbench"]);
    let pg_dir = lab.dir.path().join("pg");
    let data = lab.target.start_postgres_with(&pg_dir, &["max_connections=200", "shared_buffers=128MB"]);
    let v4 = lab.target.v4.to_string();
    let init = std::process::Command::new("pgbench")
        .args(["-i", "-q", "-s", "10", "-h", &v4, "-U", "postgres", "postgres"])
        .output()
        .expect("pgbench -i");
    assert!(init.status.success(), "pgbench -i: {}", String::from_utf8_lossy(&init.stderr));
    lab.start_agent(&format!(
        "[[target]]\nname = \"pg\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"{v4}\"]\n\n[[target.access]]\naction = \"allow\"\nusers = [\"*\"]\n"
    ));

    // Outside the cgroup the programs attach at: the direct path, and pgbouncer's upstream.
    let outside = airlock_vm_tests::cgroup2_root().join(format!("{}.pgbench", lab.tag));
    fs::create_dir_all(&outside).expect("mkdir cgroup");
    let work = lab.dir.path().join("pgbench");
    fs::create_dir_all(&work).expect("mkdir");
    fs::write(work.join("userlist.txt"), "\"postgres\" \"\"\n").expect("userlist");
    fs::write(
        work.join("pgbouncer.ini"),
        format!(
            "[databases]\npostgres = host={v4} port=5432 dbname=postgres user=postgres\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {PGBOUNCER_PORT}\nunix_socket_dir =\nauth_type = trust\nauth_file = {}\npool_mode = session\nmax_client_conn = 200\ndefault_pool_size = 50\nlogfile = {}\n",
            work.join("userlist.txt").display(),
            work.join("pgbouncer.log").display()
        ),
    )
    .expect("pgbouncer.ini");
    airlock_vm_tests::netns::sh("chown", &["-R", &lab.user("pgbench").name, &work.display().to_string()]);
    set_mode(&work, 0o755);
    let pgbouncer = spawn_as(
        lab.user("pgbench"),
        &outside,
        "/usr/sbin/pgbouncer",
        &[work.join("pgbouncer.ini").to_str().expect("utf-8")],
    );
    lab.target.wait_for_port("127.0.0.1".parse().expect("ip"), PGBOUNCER_PORT.parse().expect("port"));

    if parts == Parts::All || parts == Parts::Pgbench {
        peers(&lab, &work, &outside, &v4, pgbouncer.pid());
    }
    let workloads = match parts {
        Parts::All => &RESULTS[..],
        Parts::LargeResults => &RESULTS[..2],
        Parts::SmallResults => &RESULTS[2..],
        Parts::Pgbench => &[],
    };
    if !workloads.is_empty() {
        masked_results(&lab, &data, &work, &outside, &v4, workloads);
    }
    drop(pgbouncer);
    drop(lab);
    airlock_vm_tests::remove_cgroup_tree(&outside);
}

/// pgbench select-only and new connections: direct, Airlock, pgbouncer.
fn peers(lab: &Lab, work: &Path, outside: &Path, v4: &str, pgbouncer: u32) {
    println!(
        "pgbench select-only (-S), scale 10: medians of {ROUNDS} rounds of {SECONDS} s, the three paths interleaved in each"
    );
    println!("{:<10} {:>7}  {:>28}  {:>28}  {:>28}", "protocol", "clients", "direct", "airlock", "pgbouncer (session)");
    for protocol in ["simple", "prepared"] {
        for clients in ["1", "8"] {
            let bench = |host: &str, port: &str, cgroup: &Path, label: &str| {
                pgbench(
                    lab,
                    cgroup,
                    work,
                    label,
                    &[
                        "-S",
                        "-M",
                        protocol,
                        "-c",
                        clients,
                        "-j",
                        if clients == "1" { "1" } else { "2" },
                        "-h",
                        host,
                        "-p",
                        port,
                    ],
                )
            };
            // A slow spell of the machine touches all three paths alike.
            let (mut direct, mut airlock, mut bouncer) = (Vec::new(), Vec::new(), Vec::new());
            for round in 0..ROUNDS {
                direct.push(bench(v4, "5432", outside, &format!("direct-{protocol}-{clients}-{round}")));
                airlock.push(cpu_per_transaction(lab.agent().pid(), || {
                    bench(v4, "5432", &lab.cgroups.clients, &format!("airlock-{protocol}-{clients}-{round}"))
                }));
                bouncer.push(cpu_per_transaction(pgbouncer, || {
                    let label = format!("bouncer-{protocol}-{clients}-{round}");
                    bench("127.0.0.1", PGBOUNCER_PORT, &lab.cgroups.clients, &label)
                }));
            }
            let direct = medians(&direct);
            let (airlock, airlock_cpu): (Vec<Run>, Vec<Cpu>) = airlock.into_iter().unzip();
            let (bouncer, bouncer_cpu): (Vec<Run>, Vec<Cpu>) = bouncer.into_iter().unzip();
            let records = median(airlock_cpu.iter().map(|cpu| cpu.records).collect());
            let airlock_cpu = median(airlock_cpu.iter().map(|cpu| cpu.total).collect());
            let bouncer_cpu = median(bouncer_cpu.iter().map(|cpu| cpu.total).collect());
            let (airlock, bouncer) = (medians(&airlock), medians(&bouncer));
            println!(
                "{protocol:<10} {clients:>7}  {}  {}  {}",
                cell(&direct, &direct),
                cell(&airlock, &direct),
                cell(&bouncer, &direct)
            );
            println!(
                "{:<18}  added p50 through airlock: {:+.1} µs, through pgbouncer: {:+.1} µs",
                "",
                airlock.p50_us - direct.p50_us,
                bouncer.p50_us - direct.p50_us
            );
            println!(
                "{:<18}  proxy CPU per transaction: airlock {airlock_cpu:.1} µs ({records:.1} of it writing statement records), pgbouncer {bouncer_cpu:.1} µs",
                ""
            );
        }
    }
    println!("\nnew connection per transaction (-C, simple, 1 client): connections/s");
    let connect = |host: &str, port: &str, cgroup: &Path, label: &str| {
        pgbench(lab, cgroup, work, label, &["-S", "-C", "-c", "1", "-h", host, "-p", port]).tps
    };
    let direct = connect(v4, "5432", outside, "direct-connect");
    let airlock = connect(v4, "5432", &lab.cgroups.clients, "airlock-connect");
    let bouncer = connect("127.0.0.1", PGBOUNCER_PORT, &lab.cgroups.clients, "bouncer-connect");
    println!(
        "  direct {direct:.0}   airlock {airlock:.0} ({:.0} %)   pgbouncer {bouncer:.0} ({:.0} %)",
        airlock / direct * 100.0,
        bouncer / direct * 100.0
    );
}

/// A result the masking bench asks for, over and over.
struct Results {
    /// What the figures are of.
    title: &'static str,
    /// The pgbench script.
    script: &'static str,
    /// The same query of the table's unmasked twin (same rows, no rule
    /// names it).
    twin: &'static str,
    /// The goal the issue sets for masking's cost, if any.
    goal: &'static str,
}

/// Large results, where masking's cost per row shows: a narrow table
/// whose rows are two fifths masked (the hard case) and a wide one where
/// two columns of thirteen are, as in a typical customer table. One-row
/// results, where its cost per result does (an application's queries by
/// key).
const RESULTS: [Results; 3] = [
    Results {
        title: "1,000-row results (SELECT * of 5 columns",
        script: "SELECT * FROM people;\n",
        twin: "SELECT * FROM people_twin;\n",
        goal: ", goal ≤ 10 %",
    },
    Results {
        title: "1,000-row results of a wide table (SELECT * of 13 columns",
        script: "SELECT * FROM customers;\n",
        twin: "SELECT * FROM customers_twin;\n",
        goal: ", goal ≤ 10 %",
    },
    Results {
        title: "one-row results (SELECT * of 5 columns by primary key",
        script: "\\set id random(1, 1000)\nSELECT * FROM people WHERE id = :id;\n",
        twin: "\\set id random(1, 1000)\nSELECT * FROM people_twin WHERE id = :id;\n",
        goal: "",
    },
];

/// Results of `people` and `customers`: direct, through Airlock, through
/// Airlock masking two columns by rule (the session then logs in just in
/// time: column rules name columns through the catalog as the session's
/// role), and through Airlock running every default detector on every
/// value (two thirds of the people and every customer with hits). Both
/// protocols: with the extended one (drivers, pgbench -M prepared) the
/// columns of a result come from its portal, not from a RowDescription
/// before the rows. Separate runs of a setting swing by up to ±20 % on
/// this shared machine, more than masking costs; so the rules are also
/// measured within single runs, against an unmasked twin of the table.
fn masked_results(lab: &Lab, data: &Path, work: &Path, outside: &Path, v4: &str, workloads: &[Results]) {
    let seed = "CREATE TABLE people AS SELECT i AS id, 'Person ' || i AS name,         CASE WHEN i % 3 = 0 THEN 'person' || i || '@example.com' ELSE 'no contact' END AS email,         CASE WHEN i % 3 = 1 THEN '4111 1111 1111 1111' ELSE 'n/a' END AS card, md5(i::text) AS note         FROM generate_series(1, 1000) i; ALTER TABLE people ADD PRIMARY KEY (id);         CREATE TABLE customers AS SELECT i AS id, 'First' || i AS first_name, 'Last' || i AS last_name,         'customer' || i || '@example.com' AS email, '+1 555 01' || lpad((i % 100)::text, 2, '0') AS phone,         i || ' Main Street' AS street, 'Springfield' AS city, lpad((i * 7 % 99999)::text, 5, '0') AS postcode,         'US' AS country, timestamptz '2026-01-01' + i * interval '1 hour' AS created_at,         CASE WHEN i % 5 = 0 THEN 'inactive' ELSE 'active' END AS status,         'Customer since ' || (2000 + i % 20) || ', prefers e-mail, no open tickets' AS notes,         CASE WHEN i % 2 = 0 THEN '5500 0000 0000 0004' ELSE '4111 1111 1111 1111' END AS card         FROM generate_series(1, 1000) i; \
         CREATE TABLE people_twin AS SELECT * FROM people; ALTER TABLE people_twin ADD PRIMARY KEY (id); \
         CREATE TABLE customers_twin AS SELECT * FROM customers";
    let out = std::process::Command::new("psql")
        .args(["-h", v4, "-U", "postgres", "-d", "postgres", "-X", "-q", "-c", seed])
        .output()
        .expect("psql");
    assert!(out.status.success(), "seeding: {}", String::from_utf8_lossy(&out.stderr));
    let admin = airlock_vm_tests::TargetHost::jit_admin(data, lab.dir.path(), "bench-admin");
    // Without TLS: a masked target terminates the client's TLS itself, and
    // this measures masking, not encryption.
    let run = |script: &Path, protocol: &str, cgroup: &Path, label: &str| {
        let script = script.display().to_string();
        let args = ["-M", protocol, "-f", &script, "-c", "1", "-h", v4, "-p", "5432"];
        pgbench_in(lab, cgroup, work, label, &args, "dbname=postgres sslmode=disable")
    };
    // Every setting is the same just-in-time target, its upstream in plain
    // text like the client's: the settings differ in masking alone. (Column
    // rules need the credentials: the catalog is read as the session's role.)
    let target = format!(
        "[[target]]\nname = \"pg\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"{v4}\"]\n\n[[target.access]]\naction = \"allow\"\nusers = [\"*\"]\n\n\
         [target.credentials]\nadmin_file = \"{}\"\ntls = \"disable\"\n\n[[target.credentials.role]]\nname = \"postgres\"\ngrants = [\"pg_read_all_data\"]\nusers = [\"*\"]\n",
        admin.display()
    );
    let columns: String = ["people", "customers"]
        .iter()
        .map(|table| {
            format!(
                "\n[[target.masking.rules]]\ncolumn = \"public.{table}.email\"\nstrategy = \"token\"\n\n\
                 [[target.masking.rules]]\ncolumn = \"public.{table}.card\"\nstrategy = \"partial\"\nkeep = 4\n"
            )
        })
        .fold("\n[target.masking]\ndetectors = []\n".to_owned(), |all, rules| all + &rules);
    let detectors = "\n[target.masking]\ndetectors = [\"card\", \"email\", \"iban\", \"aws_key\", \"jwt\", \"private_key\", \"api_key\"]\n";
    let settings = [
        ("unmasked", ""),
        ("two columns masked by rule", &columns),
        ("every value through the 7 default detectors", detectors),
    ];
    for (n, workload) in workloads.iter().enumerate() {
        let script = work.join(format!("masking-{n}.sql"));
        fs::write(&script, workload.script).expect("script");
        set_mode(&script, 0o644);
        let twin = work.join(format!("masking-{n}-twin.sql"));
        fs::write(&twin, workload.twin).expect("twin script");
        set_mode(&twin, 0o644);
        for protocol in ["simple", "prepared"] {
            // Rounds interleave the settings, in an order that turns each
            // round, so a slow spell of the machine touches them all alike; a
            // setting's cost is the median of its rounds' ratios to the
            // unmasked run of the same round (the machine's speed drifts by
            // more than masking costs over a few minutes).
            let mut direct = Vec::new();
            let mut through: Vec<(Vec<f64>, Vec<f64>)> = vec![Default::default(); settings.len()];
            for round in 0..MASKING_ROUNDS {
                direct.push(run(&script, protocol, outside, &format!("masking-direct-{protocol}-{round}")).tps);
                for turn in 0..settings.len() {
                    let index = (round + turn) % settings.len();
                    lab.agent().reload(&format!("{target}{}", settings[index].1));
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    let label = format!("masking-{protocol}-{round}");
                    let (result, per) =
                        cpu_per_transaction(lab.agent().pid(), || run(&script, protocol, &lab.cgroups.clients, &label));
                    through[index].0.push(result.tps);
                    through[index].1.push(per.total);
                }
            }
            let (plain_tps, plain_cpu) = &through[0];
            let direct = median(direct);
            let plain = median(plain_tps.clone());
            println!(
                "\n{}, {protocol} protocol, 1 client): results/s, median of {MASKING_ROUNDS} rounds",
                workload.title
            );
            println!(
                "  direct {direct:.0}   airlock {plain:.0} ({:.0} % of direct), agent CPU {:.0} µs per result",
                plain / direct * 100.0,
                median(plain_cpu.clone())
            );
            // Each round's figure against the unmasked run of the same round.
            let each_round = |of: &[f64], to: &[f64], change: fn(f64, f64) -> f64| -> Vec<f64> {
                of.iter().zip(to).map(|(&a, &b)| change(a, b)).collect()
            };
            let paired = |of: &[f64], to: &[f64], change| median(each_round(of, to, change));
            let percent = |a: f64, b: f64| (a / b - 1.0) * 100.0;
            for ((what, _), (tps, cpu)) in settings.iter().zip(&through).skip(1) {
                let masked = median(tps.clone());
                let added = each_round(plain_tps, tps, percent);
                let (low, high) = middle_range(added.clone());
                println!(
                    "  airlock, {what}: {masked:.0} ({:.0} % of direct; masking adds {:.1} % to a result's time{}; rounds but the lowest and highest {low:+.1}…{high:+.1} %), agent CPU {:.0} µs per result (+{:.0} µs, +{:.0} %)",
                    masked / direct * 100.0,
                    median(added),
                    workload.goal,
                    median(cpu.clone()),
                    paired(cpu, plain_cpu, |a, b| a - b),
                    paired(cpu, plain_cpu, percent),
                );
            }
            // The rules' cost again, with the machine's spells cancelled
            // out: one pgbench run asks for the masked rows and for their
            // unmasked twin in random order, and compares their mean
            // latencies (what results/s measures with one client) and
            // medians. The twin's rows pass the masking layer too, with
            // nothing to mask: a few ns a row less than no masking at all.
            lab.agent().reload(&format!("{target}{columns}"));
            std::thread::sleep(std::time::Duration::from_secs(1));
            let runs: Vec<[(f64, f64); 2]> = (0..PAIRED_RUNS)
                .map(|round| {
                    let (masked, unmasked) = (script.display().to_string(), twin.display().to_string());
                    let args = ["-M", protocol, "-f", &masked, "-f", &unmasked, "-c", "1", "-h", v4, "-p", "5432"];
                    let label = format!("masking-paired-{protocol}-{round}");
                    let database = "dbname=postgres sslmode=disable";
                    let (.., log) = pgbench_logged(lab, &lab.cgroups.clients, work, &label, &args, database);
                    let of_script = |script: usize| -> (f64, f64) {
                        let latencies: Vec<f64> =
                            log.iter().filter(|(s, _)| *s == script).map(|(_, latency)| *latency).collect();
                        (latencies.iter().sum::<f64>() / latencies.len().max(1) as f64, median(latencies))
                    };
                    [of_script(0), of_script(1)]
                })
                .collect();
            check_paired_masking(lab, PAIRED_RUNS);
            let added = |figure: fn(&(f64, f64)) -> f64| -> Vec<f64> {
                runs.iter().map(|[masked, twin]| percent(figure(masked), figure(twin))).collect()
            };
            let (means, medians) = (added(|l| l.0), added(|l| l.1));
            let (low, high) = middle_range(means.clone());
            println!(
                "  paired in one run (two columns by rule vs the same rows of an unmasked twin table, in random order; {PAIRED_RUNS} runs): masking adds {:.1} % to a result's mean time{} (runs but the lowest and highest {low:+.1}…{high:+.1} %; {:.0} µs vs {:.0} µs), {:.1} % to its median",
                median(means),
                workload.goal,
                median(runs.iter().map(|[masked, _]| masked.0).collect()),
                median(runs.iter().map(|[_, twin]| twin.0).collect()),
                median(medians),
            );
        }
    }
}

/// pgbench runs of the masked and twin results together.
const PAIRED_RUNS: usize = 5;

/// Checks, in the audit log, that the last `sessions` sessions that asked
/// for a twin table had every result of the masked table masked and none
/// of the twin's: a paired figure compares what it says it compares.
fn check_paired_masking(lab: &Lab, sessions: usize) {
    use airlock::audit::query::{Filter, query};
    let dir = &lab.agent().config.audit_dir;
    let statements = |filter: Filter| {
        let mut found = Vec::new();
        query(dir, &Filter { kind: Some("postgres.statement".into()), ..filter }, |record| {
            found.push(record);
            true
        })
        .expect("audit query");
        found
    };
    // One client at a time: a session's records follow one another.
    let mut twin_sessions: Vec<String> = statements(Filter { text: Some("_twin".into()), ..Filter::default() })
        .iter()
        .filter_map(|record| record["session"].as_str().map(str::to_owned))
        .collect();
    twin_sessions.dedup();
    assert!(twin_sessions.len() >= sessions, "{} sessions asked for a twin table", twin_sessions.len());
    for session in &twin_sessions[twin_sessions.len() - sessions..] {
        let records = statements(Filter { session: Some(session.clone()), ..Filter::default() });
        let (mut masked, mut twins) = (0, 0);
        for record in records.iter().filter(|r| r["detail"]["results"].as_array().is_some_and(|r| !r.is_empty())) {
            let sql = record["detail"]["sql"].as_str().unwrap_or_default();
            let masks = record["detail"]["masked"].as_array().is_some_and(|m| !m.is_empty());
            if sql.contains("_twin") {
                assert!(!masks, "a twin's result was masked: {record}");
                twins += 1;
            } else {
                assert!(masks, "a result to mask was not: {record}");
                masked += 1;
            }
        }
        assert!(masked > 0 && twins > 0, "session {session}: {masked} masked and {twins} twin results");
    }
}

/// Rounds of the pgbench measurements.
const ROUNDS: usize = 3;

/// Rounds of the masking measurements: their settings differ by a few
/// per cent, and single 4 s runs on this shared machine by up to ten. A
/// multiple of the three settings, so each runs in each turn of a round
/// as often.
const MASKING_ROUNDS: usize = 6;

/// The lowest and highest of `values` once their lowest and highest are
/// left out: how far a figure swings between rounds, a spell of the shared
/// machine aside.
fn middle_range(mut values: Vec<f64>) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let middle = if values.len() > 2 { &values[1..values.len() - 1] } else { &values[..] };
    (middle.first().copied().unwrap_or(f64::NAN), middle.last().copied().unwrap_or(f64::NAN))
}

/// Each figure's median over runs.
fn medians(runs: &[Run]) -> Run {
    let of = |figure: fn(&Run) -> f64| median(runs.iter().map(figure).collect());
    Run {
        tps: of(|run| run.tps),
        transactions: of(|run| run.transactions as f64) as u64,
        p50_us: of(|run| run.p50_us),
        p99_us: of(|run| run.p99_us),
    }
}

fn cell(run: &Run, direct: &Run) -> String {
    format!(
        "{:>7.0} tps {:>3.0}% p50 {:>5.0}µs p99 {:>5.0}µs",
        run.tps,
        run.tps / direct.tps * 100.0,
        run.p50_us,
        run.p99_us
    )
}

/// pgbench into database `postgres`, TLS as libpq prefers.
fn pgbench(lab: &Lab, cgroup: &Path, work: &Path, label: &str, args: &[&str]) -> Run {
    pgbench_in(lab, cgroup, work, label, args, "postgres")
}

/// pgbench with `database` as the connection string's database part.
fn pgbench_in(lab: &Lab, cgroup: &Path, work: &Path, label: &str, args: &[&str], database: &str) -> Run {
    let (tps, transactions, log) = pgbench_logged(lab, cgroup, work, label, args, database);
    let mut latencies: Vec<f64> = log.into_iter().map(|(_, latency)| latency).collect();
    latencies.sort_by(f64::total_cmp);
    let percentile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    Run { tps, transactions, p50_us: percentile(0.5), p99_us: percentile(0.99) }
}

/// pgbench's throughput, its transaction count and each transaction's
/// script and latency.
fn pgbench_logged(
    lab: &Lab,
    cgroup: &Path,
    work: &Path,
    label: &str,
    args: &[&str],
    database: &str,
) -> (f64, u64, Vec<(usize, f64)>) {
    let prefix = work.join(label);
    let prefix_arg = format!("--log-prefix={}", prefix.display());
    let mut full = vec!["-n", "-T", SECONDS, "-U", "postgres", "-l", &prefix_arg];
    full.extend_from_slice(args);
    full.push(database);
    let out = run_as(lab.user("pgbench"), cgroup, "pgbench", &full);
    assert!(out.success(), "pgbench {label}: {out:?}");
    let tps = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = ")?.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no tps in pgbench output: {}", out.stdout));
    let transactions = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: ")?.split('/').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no transaction count in pgbench output: {}", out.stdout));
    (tps, transactions, transaction_log(work, label))
}

/// Each transaction of pgbench run `label` (its `-l` log, removed once
/// read): the script it ran (the order of `-f`) and its latency in µs.
fn transaction_log(work: &Path, label: &str) -> Vec<(usize, f64)> {
    let mut transactions = Vec::new();
    for entry in fs::read_dir(work).expect("read work dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{label}.")) {
            let text = fs::read_to_string(entry.path()).unwrap_or_default();
            // client, transaction, latency, script, epoch seconds, µs
            transactions.extend(text.lines().filter_map(|line| {
                let mut fields = line.split_whitespace().skip(2);
                let latency = fields.next()?.parse().ok()?;
                Some((fields.next()?.parse().ok()?, latency))
            }));
            let _ = fs::remove_file(entry.path());
        }
    }
    transactions
}

/// Connection set-up with just-in-time logins: the first connection of a
/// person creates a role, the next ones within its validity reuse it; next
/// to the same client logging in directly with a password. A client
/// process (tokio-postgres) per person and measurement times each login
/// from connect to the answer of a `SELECT 1`. (pgbench -C cannot time a
/// first login: it logs in once before it starts timing; psql's own start
/// and the client's move into its cgroup take longer than the login.)
pub fn jit_setup() {
    const PEOPLE: usize = 5;
    /// Logins a person makes per measurement of reused roles and of direct logins.
    const LOGINS: &str = "10";
    let names: Vec<String> = (0..PEOPLE).map(|i| format!("p{i}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut lab = Lab::new(&name_refs);
    let pg_dir = lab.dir.path().join("pg");
    let data = lab.target.start_postgres_auth(&pg_dir, &[], "scram-sha-256");
    // A throwaway password of a throwaway server, for the direct baseline.
    let password = "bench-admin";
    let admin = airlock_vm_tests::TargetHost::jit_admin(&data, lab.dir.path(), password);
    let v4 = lab.target.v4.to_string();
    lab.start_agent(&format!(
        "[[target]]\nname = \"pg\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"{v4}\"]\n\n[[target.access]]\naction = \"allow\"\nusers = [\"*\"]\n\n[target.credentials]\nadmin_file = \"{}\"\n\n[[target.credentials.role]]\nname = \"reader\"\ngrants = [\"pg_read_all_data\"]\nusers = [\"*\"]\n",
        admin.display()
    ));
    let work = lab.dir.path().join("jit");
    fs::create_dir_all(&work).expect("mkdir");
    set_mode(&work, 0o755);
    // The direct path runs from a cgroup the programs do not attach at.
    let outside = airlock_vm_tests::cgroup2_root().join(format!("{}.jit", lab.tag));
    fs::create_dir_all(&outside).expect("mkdir cgroup");
    let me = std::env::current_exe().expect("own path").display().to_string();
    // `logins` timed logins as `person`, in ms.
    let time = |person: &str, cgroup: &Path, logins: &str, target: &str, password_file: Option<&Path>| {
        let file = password_file.map(|f| f.display().to_string());
        let mut args = vec!["pg-connect", logins, target];
        args.extend(file.as_deref());
        let out = run_as(lab.user(person), cgroup, &me, &args);
        assert!(out.success(), "timed logins: {out:?}");
        out.stdout.lines().map(|l| l.parse::<f64>().expect("a time in ms")).collect::<Vec<_>>()
    };
    let through_airlock = format!("host={v4} user=reader dbname=postgres");
    let direct_login = format!("host={v4} user=airlock_admin dbname=postgres");
    let (mut direct, mut new_role, mut reused) = (Vec::new(), Vec::new(), Vec::new());
    for person in &names {
        // The password in a file of the person's, never on a command line.
        let password_file = work.join(format!("{person}.password"));
        fs::write(&password_file, password).expect("password file");
        airlock_vm_tests::netns::sh("chown", &[&lab.user(person).name, &password_file.display().to_string()]);
        set_mode(&password_file, 0o600);
        direct.push(median(time(person, &outside, LOGINS, &direct_login, Some(&password_file))));
        new_role.extend(time(person, &lab.cgroups.clients, "1", &through_airlock, None));
        reused.push(median(time(person, &lab.cgroups.clients, LOGINS, &through_airlock, None)));
    }
    println!("\nconnection set-up (a new process: connect, log in, SELECT 1), median of {PEOPLE} people");
    let rows = [
        (format!("direct, password login (SCRAM), {LOGINS} each"), direct),
        ("airlock, new role (created for the person)".to_owned(), new_role),
        (format!("airlock, reused role, {LOGINS} each"), reused),
    ];
    for (label, times) in rows {
        println!("  {label:<44}{:>7.2} ms", median(times));
    }
    drop(lab);
    airlock_vm_tests::remove_cgroup_tree(&outside);
}

/// `pg-connect LOGINS CONNINFO [PASSWORD_FILE]`, run as a test user: logs in
/// LOGINS times, one after the other, and prints each login's time in ms,
/// from connect to the answer of a `SELECT 1`.
pub fn timed_logins(args: &[String]) {
    let logins: usize = args[0].parse().expect("login count");
    let mut config: tokio_postgres::Config = args[1].parse().expect("connection string");
    if let Some(file) = args.get(2) {
        config.password(fs::read_to_string(file).expect("password file").trim_end());
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    for _ in 0..logins {
        let elapsed = runtime.block_on(async {
            let start = std::time::Instant::now();
            let (client, connection) = config.connect(tokio_postgres::NoTls).await.expect("login");
            let connection = tokio::spawn(connection);
            client.simple_query("SELECT 1").await.expect("SELECT 1");
            let elapsed = start.elapsed();
            drop(client);
            let _ = connection.await;
            elapsed
        });
        println!("{}", elapsed.as_secs_f64() * 1000.0);
    }
}
