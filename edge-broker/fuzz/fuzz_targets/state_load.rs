//! Fuzz the loaders of saved MQTT state: the first byte picks the file (a journal
//! generation, `sessions.bin` or `retained.bin`), the rest is its content. A load must never
//! panic, and a file it cannot read must be moved aside with its bytes intact.
#![no_main]

use std::path::Path;

use edge_broker::state::replay;
use edge_log::Storage;
use edge_log::testing::MemStorage;
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 3] = ["00000000000000000001.journal", "sessions.bin", "retained.bin"];

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let name = NAMES[usize::from(which) % NAMES.len()];
    let storage = MemStorage::default();
    let dir = Path::new("/state");
    storage.create_dir_all(dir).expect("mkdir");
    let file = storage.create(&dir.join(name)).expect("create");
    edge_log::storage::write_all_at(file.as_ref(), bytes, 0).expect("write");
    let (_, report) = replay::load(&storage, dir);
    for q in &report.quarantined {
        let moved = q.moved_to.as_ref().expect("moved aside");
        assert_eq!(storage.contents(moved).as_deref(), Some(bytes));
    }
});
