//! Arbitrary bytes as a user's YAML file, through the parse, validation and render path of
//! `shopctl render -f FILE --offline`: no panic; a clear error, or trees that keep values values.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use shopset::render::Renderer;

static RENDERER: LazyLock<Renderer> = LazyLock::new(|| Renderer::embedded().expect("embedded templates compile"));

fuzz_target!(|data: &[u8]| {
    if let Err(finding) = shopset_fuzz::check_manifests(&RENDERER, data) {
        panic!("{finding}\n\ninput: {:?}", String::from_utf8_lossy(data));
    }
});
