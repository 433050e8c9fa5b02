//! Conformance cases: Output chunks on both streams.

use super::*;

/// Output chunks concatenate per stream in seq order; a repeated seq is skipped.
pub async fn output_streams(store: &dyn Store) {
    let p = project(store, "p").await;
    let run = running_run(store, p.id, "w").await;
    store
        .append_output(
            run.id,
            &[
                chunk(Stream::Stdout, 1, "PLAY [all] "),
                chunk(Stream::Stderr, 2, "warn: x\n"),
                chunk(Stream::Stdout, 4, "ok: [a]\n"),
            ],
        )
        .await
        .expect("append");
    store
        .append_output(
            run.id,
            &[
                chunk(Stream::Stdout, 3, "***\n"),
                chunk(Stream::Stdout, 4, "DUPLICATE"),
                chunk(Stream::Stderr, 5, "ünïcode\n"),
            ],
        )
        .await
        .expect("append");
    store.append_output(run.id, &[]).await.expect("empty");
    assert_eq!(
        store
            .read_output(run.id, Stream::Stdout)
            .await
            .expect("read"),
        "PLAY [all] ***\nok: [a]\n"
    );
    assert_eq!(
        store
            .read_output(run.id, Stream::Stderr)
            .await
            .expect("read"),
        "warn: x\nünïcode\n"
    );
    let big: String = "x".repeat(100_000);
    let many: Vec<OutputChunk> = (6..3006)
        .map(|s| chunk(Stream::Stdout, s, &big[..(s as usize % 50)]))
        .collect();
    store
        .append_output(run.id, &many)
        .await
        .expect("many chunks");
    let out = store
        .read_output(run.id, Stream::Stdout)
        .await
        .expect("read");
    let expected_len =
        "PLAY [all] ***\nok: [a]\n".len() + many.iter().map(|c| c.text.len()).sum::<usize>();
    assert_eq!(out.len(), expected_len);
}
