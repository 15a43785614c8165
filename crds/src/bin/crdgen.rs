//! Prints every Nestor CRD as one YAML stream, or with `--markdown` the API
//! reference generated from the same schema.
//!
//! `cargo run -p nestor-crds --bin crdgen > crds/nestor.dev_crds.yaml`
//! `cargo run -p nestor-crds --bin crdgen -- --markdown > docs/api.md`
fn main() {
    if std::env::args().any(|a| a == "--markdown") {
        print!("{}", nestor_crds::api_reference_markdown());
    } else {
        print!("{}", nestor_crds::crds_yaml());
    }
}
