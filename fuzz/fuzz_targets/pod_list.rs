#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| promlet::fuzzing::pod_list(data));
