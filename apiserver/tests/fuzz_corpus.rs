//! The apiserver's fuzz checks (`fuzz/checks/`, the same code the cargo-fuzz
//! targets run) over their seed corpora, the kept regression inputs and
//! deterministic mutations of both: label and field selectors, and request
//! bodies through the real router. Deep runs: `scripts/fuzz.sh`.

#[path = "../../fuzz/checks/api_body.rs"]
mod api_body;
#[path = "../../fuzz/checks/corpus.rs"]
mod corpus;
#[path = "../../fuzz/checks/selector.rs"]
mod selector;

#[test]
fn selectors() {
    corpus::replay("selector", selector::check);
}

#[test]
fn api_request_bodies_never_get_a_500() {
    corpus::replay("api_body", api_body::check);
}
