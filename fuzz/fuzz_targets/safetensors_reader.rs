//! Any bytes, read as a safetensors file: opening must return a model or an error, never panic, and
//! never allocate more than the file justifies; every tensor of a model that opens is read and summarised.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quantscope::model::Model;
use quantscope::stats::summarize_tensor;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = Model::from_bytes("fuzz.safetensors", Arc::from(data)) {
        for t in &model.tensors {
            let _ = summarize_tensor(&model, t, 16);
        }
    }
});
