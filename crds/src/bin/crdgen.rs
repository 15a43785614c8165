//! Prints every Nestor CRD as one YAML stream.
//!
//! `cargo run -p nestor-crds --bin crdgen > crds/nestor.dev_crds.yaml`
fn main() {
    print!("{}", nestor_crds::crds_yaml());
}
