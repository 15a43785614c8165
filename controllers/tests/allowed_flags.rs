//! The flags a tenant may set, as `docs/security.md` lists them, are the
//! operator's own lists.

use nestor_controllers::model::flags;

#[test]
fn the_documented_flags_are_the_allowed_ones() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/security.md"))
        .expect("docs/security.md");
    for (component, allowed) in [
        ("kube-apiserver", flags::APISERVER_ALLOWED),
        ("kube-controller-manager", flags::CONTROLLER_MANAGER_ALLOWED),
        ("kube-scheduler", flags::SCHEDULER_ALLOWED),
    ] {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| {component} |")))
            .unwrap_or_else(|| panic!("no row for {component}"));
        let documented: Vec<&str> = row.split('`').skip(1).step_by(2).collect();
        assert_eq!(documented, allowed, "{component}");
    }
}
