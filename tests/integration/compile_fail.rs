//! Illegal transitions do not compile (trybuild UI tests, named as
//! sentences), and the legal ones do (the control case).

#[test]
fn illegal_transitions_do_not_compile_and_legal_ones_do() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
