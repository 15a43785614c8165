//! Checks of `spec.backup`: a schedule that parses and runs no more often
//! than every [`MIN_BACKUP_INTERVAL_MINUTES`] minutes, and a destination
//! the platform allows.

use super::Problems;
use super::fields::excerpt;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{Timestamp, Zoned};
use nestor_crds::{BackupSpec, S3Destination};

/// The shortest time between two scheduled backups: a schedule is a
/// promise about the host's load as much as about the tenant's data.
pub const MIN_BACKUP_INTERVAL_MINUTES: i64 = 5;

/// Parses a five-field cron schedule (minute, hour, day of month, month,
/// day of week; `@daily` and the like too), read in UTC.
pub fn parse_schedule(schedule: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(schedule)
        .map_err(|e| e.to_string())
}

/// The latest time at or before `now` that `schedule` names.
pub fn latest_slot(schedule: &Cron, now: Timestamp) -> Option<Timestamp> {
    let now = now.to_zoned(TimeZone::UTC);
    schedule
        .find_previous_occurrence(&now, true)
        .ok()
        .map(|z: Zoned| z.timestamp())
}

/// The first time after `now` that `schedule` names.
pub fn next_slot(schedule: &Cron, now: Timestamp) -> Option<Timestamp> {
    let now = now.to_zoned(TimeZone::UTC);
    schedule
        .find_next_occurrence(&now, false)
        .ok()
        .map(|z: Zoned| z.timestamp())
}

/// The shortest gap between the next few dozen slots of `schedule` after
/// a fixed time, in minutes.
fn shortest_gap_minutes(schedule: &Cron) -> Option<i64> {
    // A Monday at midnight, the first of a month: every field's turn comes.
    let mut at = Timestamp::from_second(1_767_225_600).ok()?;
    let mut shortest: Option<i64> = None;
    for _ in 0..64 {
        let next = next_slot(schedule, at)?;
        let gap = (next.as_second() - at.as_second()) / 60;
        if at.as_second() != 1_767_225_600 {
            shortest = Some(shortest.map_or(gap, |s| s.min(gap)));
        }
        at = next;
    }
    shortest
}

/// Validates a backup spec against the S3 endpoints the platform allows.
pub fn validate_backup(backup: &BackupSpec, endpoints: &[String]) -> Result<(), super::Invalid> {
    let mut problems = Problems::default();
    check_backup(&mut problems, backup, endpoints);
    problems.into_result(Some(()))
}

pub(super) fn check_backup(problems: &mut Problems, backup: &BackupSpec, endpoints: &[String]) {
    if let Some(schedule) = &backup.schedule {
        match parse_schedule(schedule) {
            Err(why) => problems.push(
                "spec.backup.schedule",
                format!(
                    "'{}' is not a cron schedule of five fields (minute hour day-of-month month day-of-week), such as '0 */6 * * *': {}",
                    excerpt(schedule),
                    excerpt(&why)
                ),
            ),
            Ok(cron) => {
                if shortest_gap_minutes(&cron).is_some_and(|g| g < MIN_BACKUP_INTERVAL_MINUTES) {
                    problems.push(
                        "spec.backup.schedule",
                        format!(
                            "'{}' runs more often than every {MIN_BACKUP_INTERVAL_MINUTES} minutes",
                            excerpt(schedule)
                        ),
                    );
                }
            }
        }
    }
    if !(1..=100).contains(&backup.retention) {
        problems.push(
            "spec.backup.retention",
            format!("{} is not from 1 to 100", backup.retention),
        );
    }
    let destination = &backup.destination;
    match (&destination.volume, &destination.s3) {
        (Some(_), None) => {}
        (None, Some(s3)) => check_s3(problems, s3, endpoints),
        _ => problems.push(
            "spec.backup.destination",
            "must name exactly one of volume and s3",
        ),
    }
}

fn check_s3(problems: &mut Problems, s3: &S3Destination, endpoints: &[String]) {
    let field = "spec.backup.destination.s3.endpoint";
    if !endpoints.contains(&s3.endpoint) {
        let listed = if endpoints.is_empty() {
            "it lists none".to_string()
        } else {
            format!("it lists {}", endpoints.join(", "))
        };
        problems.push(
            field,
            format!(
                "'{}' is not one of the platform's backup endpoints (the Helm value backup.allowedEndpoints; {listed})",
                excerpt(&s3.endpoint)
            ),
        );
    } else if endpoint_problem(&s3.endpoint).is_some() {
        problems.push(
            field,
            format!(
                "'{}' is not an http or https URL of a host and port",
                excerpt(&s3.endpoint)
            ),
        );
    }
    let bucket = &s3.bucket;
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !bucket.contains("..");
    if !bucket_ok {
        problems.push(
            "spec.backup.destination.s3.bucket",
            format!(
                "'{}' is not an S3 bucket name: 3 to 63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit",
                excerpt(bucket)
            ),
        );
    }
    let prefix = &s3.prefix;
    let prefix_ok = !prefix.starts_with('/')
        && !prefix.split('/').any(|part| part == "." || part == "..")
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./!*'()".contains(c));
    if !prefix_ok {
        problems.push(
            "spec.backup.destination.s3.prefix",
            format!(
                "'{}' is not a key prefix: letters, digits and -_./!*'() only, no leading '/', no '.' or '..' segment",
                excerpt(prefix)
            ),
        );
    }
    let region = &s3.region;
    if region.is_empty()
        || !region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        problems.push(
            "spec.backup.destination.s3.region",
            format!(
                "'{}' is not a region: lowercase letters, digits and '-'",
                excerpt(region)
            ),
        );
    }
}

/// Why `endpoint` is not an `http` or `https` URL of a host and an
/// optional port (no user, path, query or fragment), if it is not.
pub fn endpoint_problem(endpoint: &str) -> Option<&'static str> {
    let Ok(uri) = endpoint.parse::<http::Uri>() else {
        return Some("not a URL");
    };
    let scheme = uri.scheme_str();
    if scheme != Some("http") && scheme != Some("https") {
        return Some("not http or https");
    }
    let Some(authority) = uri.authority() else {
        return Some("no host");
    };
    if authority.as_str().contains('@') {
        return Some("a user name");
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() || endpoint.contains('#') {
        return Some("a path, query or fragment");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use nestor_crds::{BackupDestination, VolumeDestination};

    fn spec(schedule: Option<&str>, s3: Option<S3Destination>) -> BackupSpec {
        BackupSpec {
            schedule: schedule.map(str::to_string),
            retention: 7,
            destination: BackupDestination {
                volume: s3.is_none().then(|| VolumeDestination {
                    claim_name: "backups".into(),
                }),
                s3,
            },
        }
    }

    fn s3(endpoint: &str) -> S3Destination {
        S3Destination {
            endpoint: endpoint.into(),
            bucket: "tenant-backups".into(),
            prefix: "nestor/".into(),
            region: "us-east-1".into(),
            credentials_secret: "s3".into(),
            ca_secret: None,
        }
    }

    fn problems_of(backup: &BackupSpec, endpoints: &[&str]) -> Vec<String> {
        let endpoints: Vec<String> = endpoints.iter().map(|e| e.to_string()).collect();
        let mut problems = Problems::default();
        check_backup(&mut problems, backup, &endpoints);
        problems.0
    }

    #[test]
    fn schedules_parse_in_five_fields_and_not_too_often() {
        for ok in [
            "0 */6 * * *",
            "*/5 * * * *",
            "30 2 * * 1-5",
            "@daily",
            "17 4 1 * *",
        ] {
            assert_eq!(
                problems_of(&spec(Some(ok), None), &[]),
                Vec::<String>::new(),
                "{ok}"
            );
        }
        for (bad, why) in [
            ("* * * * *", "more often than every 5 minutes"),
            ("0,1 * * * *", "more often than every 5 minutes"),
            ("0 0 * * * *", "five fields"),
            ("61 * * * *", "five fields"),
            ("every day", "five fields"),
        ] {
            let problems = problems_of(&spec(Some(bad), None), &[]);
            assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
            assert!(
                problems[0].starts_with("spec.backup.schedule: "),
                "{problems:?}"
            );
            assert!(problems[0].contains(why), "{bad}: {problems:?}");
        }
    }

    #[test]
    fn the_latest_slot_is_at_or_before_now() {
        let cron = parse_schedule("0 */6 * * *").unwrap();
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(
            latest_slot(&cron, at("2026-12-05T07:59:00Z")),
            Some(at("2026-12-05T06:00:00Z"))
        );
        assert_eq!(
            latest_slot(&cron, at("2026-12-05T06:00:00Z")),
            Some(at("2026-12-05T06:00:00Z"))
        );
        assert_eq!(
            next_slot(&cron, at("2026-12-05T06:00:00Z")),
            Some(at("2026-12-05T12:00:00Z"))
        );
    }

    #[test]
    fn s3_destinations_are_the_platforms_and_well_formed() {
        let allowed = ["https://s3.internal:9000", "http://10.0.0.5:7070"];
        assert!(
            problems_of(&spec(None, Some(s3("https://s3.internal:9000"))), &allowed).is_empty()
        );
        let problems = problems_of(&spec(None, Some(s3("https://evil.example"))), &allowed);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("spec.backup.destination.s3.endpoint: 'https://evil.example' is not one of the platform's backup endpoints"),
            "{problems:?}"
        );
        let problems = problems_of(&spec(None, Some(s3("https://s3.internal:9000"))), &[]);
        assert!(problems[0].contains("it lists none"), "{problems:?}");
        let mut bad = s3("http://10.0.0.5:7070");
        bad.bucket = "Bad_Bucket".into();
        bad.prefix = "../other-tenant".into();
        bad.region = "US EAST".into();
        let problems = problems_of(&spec(None, Some(bad)), &allowed);
        let fields: Vec<&str> = problems
            .iter()
            .map(|p| p.split(':').next().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "spec.backup.destination.s3.bucket",
                "spec.backup.destination.s3.prefix",
                "spec.backup.destination.s3.region"
            ]
        );
        let mut both = spec(None, Some(s3("http://10.0.0.5:7070")));
        both.destination.volume = Some(VolumeDestination {
            claim_name: "b".into(),
        });
        both.retention = 0;
        assert_eq!(
            problems_of(&both, &allowed),
            [
                "spec.backup.retention: 0 is not from 1 to 100",
                "spec.backup.destination: must name exactly one of volume and s3"
            ]
        );
    }

    #[test]
    fn endpoints_are_a_scheme_a_host_and_a_port() {
        assert_eq!(endpoint_problem("https://s3.internal:9000"), None);
        assert_eq!(endpoint_problem("http://10.0.0.5"), None);
        for bad in [
            "ftp://h",
            "https://user:pw@h",
            "https://h/path",
            "https://h?q=1",
            "https://h#f",
            "h:9000",
        ] {
            assert!(endpoint_problem(bad).is_some(), "{bad}");
        }
    }
}
