//! Arbitrary Tier/Configuration/ShopSet specs (decoded by `shopset_fuzz::decode`) through the
//! renderer: no panic, and every rendered YAML file reads back as exactly the expected data.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use shopset::render::Renderer;

// Compiling the templates once keeps the fuzzer fast; the embedded templates always compile.
static RENDERER: LazyLock<Renderer> = LazyLock::new(|| Renderer::embedded().expect("embedded templates compile"));

fuzz_target!(|data: &[u8]| {
    let case = shopset_fuzz::decode(data);
    if let Err(finding) = shopset_fuzz::check_case(&RENDERER, &case) {
        panic!("{finding}\n\ninput: {case:#?}");
    }
});
