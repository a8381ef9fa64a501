//! The report: each set's figures and whether its goals are met.

use super::*;

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// The runs of one tool over the rounds.
fn runs_of(rounds: &[Round], tool: Tool) -> Vec<Run> {
    rounds
        .iter()
        .flat_map(|r| {
            r.runs
                .iter()
                .filter(|(t, _)| *t == tool)
                .map(|(_, run)| *run)
        })
        .collect()
}

/// Medians of (stop, start) by tool.
type Medians = std::collections::BTreeMap<usize, (f64, f64)>;

/// Prints a set's figures; whether its goals are met.
pub(crate) fn report(set: &Set, rounds: &[Round], floor_goal: bool) -> bool {
    let kv = runs_of(rounds, Tool::Kvmroll);
    let bytes = median(kv.iter().map(|r| r.image_bytes as f64).collect());
    let floor_w: Vec<f64> = rounds
        .iter()
        .zip(&kv)
        .map(|(r, run)| run.image_bytes as f64 / r.write_bw)
        .collect();
    let floor_r: Vec<f64> = rounds
        .iter()
        .zip(&kv)
        .map(|(r, run)| run.image_bytes as f64 / r.read_bw)
        .collect();
    println!();
    println!(
        "{}: images {:.2} GiB in all; {} round(s), medians (min-max)",
        set.label,
        bytes / GIB as f64,
        rounds.len()
    );
    println!(
        "  cold boots, initrd copied into RAM: {} s",
        set.boots
            .iter()
            .map(|d| format!("{:.2}", secs(*d)))
            .collect::<Vec<_>>()
            .join(" ")
    );
    if let Some(w) = set.warmup {
        println!(
            "  untimed first save and restore (virsh, 4 at once): stop {:.2} s, start {:.2} s",
            w.stopped(),
            secs(w.start)
        );
    }
    let med = tool_rows(rounds);
    disk_rows(rounds, &floor_w, &floor_r);
    let floor = (median(floor_w), median(floor_r));
    ratios_and_goals(&med, floor, floor_goal)
}

/// One row per tool: its stops and starts; their medians.
fn tool_rows(rounds: &[Round]) -> Medians {
    println!("  {:<32} {:<24} {:<24}", "", "stop (+ sync)", "start");
    let mut med = Medians::new();
    for tool in TOOLS {
        let runs = runs_of(rounds, tool);
        let stop: Vec<f64> = runs.iter().map(Run::stopped).collect();
        let start: Vec<f64> = runs.iter().map(|r| secs(r.start)).collect();
        let sync = median(runs.iter().map(|r| secs(r.sync)).collect());
        println!(
            "  {:<32} {:<24} {:<24}{}",
            tool.name(),
            spread(&stop),
            spread(&start),
            if sync >= 0.01 {
                format!(" (sync {sync:.2} s)")
            } else {
                String::new()
            }
        );
        med.insert(tool as usize, (median(stop), median(start)));
    }
    med
}

/// The disk's bandwidth and the floor it sets.
fn disk_rows(rounds: &[Round], floor_w: &[f64], floor_r: &[f64]) {
    let wbw: Vec<f64> = rounds.iter().map(|r| r.write_bw / 1e6).collect();
    let rbw: Vec<f64> = rounds.iter().map(|r| r.read_bw / 1e6).collect();
    println!(
        "  {:<32} {:<24} {:<24}",
        "disk, dd direct I/O (MB/s)",
        format!("write {:.0}", median(wbw)),
        format!("read {:.0}", median(rbw))
    );
    println!(
        "  {:<32} {:<24} {:<24}",
        "disk floor (images / bandwidth)",
        spread(floor_w),
        spread(floor_r)
    );
}

/// The ratios, and the goals met or missed; whether all are met. `floor`:
/// the medians of the disk floor, (write, read).
fn ratios_and_goals(med: &Medians, floor: (f64, f64), floor_goal: bool) -> bool {
    let (kv_stop, kv_start) = med[&(Tool::Kvmroll as usize)];
    let (lg_stop, lg_start) = med[&(Tool::LibvirtGuests as usize)];
    let (vs_stop, vs_start) = med[&(Tool::Virsh as usize)];
    let (fw, fr) = floor;
    println!(
        "  {:<32} {:<24} {:<24}",
        "twice the floor",
        format!("{:6.2} s", 2.0 * fw),
        format!("{:6.2} s", 2.0 * fr)
    );
    let ratio = |what: &str, a: f64, b: f64| {
        println!(
            "  {:<32} {:<24} {:<24}",
            what,
            format!("{a:6.2}"),
            format!("{b:6.2}")
        );
    };
    ratio(
        "kvmroll / libvirt-guests",
        kv_stop / lg_stop,
        kv_start / lg_start,
    );
    ratio("kvmroll / disk floor", kv_stop / fw, kv_start / fr);
    ratio(
        "kvmroll / virsh, 4 at once",
        kv_stop / vs_stop,
        kv_start / vs_start,
    );
    let mut all = true;
    let mut goal = |what: &str, value: f64, limit: f64| {
        let ok = value <= limit;
        all &= ok;
        println!(
            "  goal: {what:<42} {value:6.3} <= {limit:.3}: {}",
            verdict(ok)
        );
    };
    goal(
        "kvmroll stop / libvirt-guests stop",
        kv_stop / lg_stop,
        1.0 / 3.0,
    );
    goal(
        "kvmroll start / libvirt-guests start",
        kv_start / lg_start,
        0.5,
    );
    if floor_goal {
        goal("kvmroll stop / disk floor", kv_stop / fw, 2.0);
        goal("kvmroll start / disk floor", kv_start / fr, 2.0);
    }
    all
}
