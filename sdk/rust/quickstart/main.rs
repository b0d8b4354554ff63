//! The packaged-crate quickstart: sdk/rust/test.sh builds it in a fresh cargo project outside the
//! repository, depending only on the packaged `aiprod-sdk` and tokio.
use aiprod_sdk::{Client, StreamExt, pb};

#[tokio::main]
async fn main() -> Result<(), aiprod_sdk::Error> {
    let endpoint = std::env::var("AIPROD_ENDPOINT").expect("AIPROD_ENDPOINT");
    let api_key = std::env::var("AIPROD_API_KEY").expect("AIPROD_API_KEY");
    let client = Client::connect(endpoint, &api_key).await?;

    // request_id left empty: the SDK fills one, so its retries never create a second job.
    let job = client
        .render()
        .create_job(pb::CreateJobRequest {
            preset_id: "quick_social".into(),
            brief: "A 30 second teaser for our summer sneaker drop".into(),
            auto_approve: true,
            ..Default::default()
        })
        .await?
        .into_inner()
        .job
        .unwrap_or_default();
    println!("created {}", job.job_id);

    let mut events = Box::pin(client.watch_job(job.job_id.clone(), 0));
    let mut last = None;
    while let Some(event) = events.next().await {
        let event = event?;
        println!("#{} {:?}", event.sequence, pb::JobState::try_from(event.state));
        last = Some(event.state);
    }
    assert_eq!(last, Some(pb::JobState::Delivered as i32), "the job is delivered");

    let video = client.download_video(&job.job_id, "video.mp4").await?;
    // Parsed by test.sh, which checks the file's size and SHA-256 against these.
    println!("video.mp4 {} {}", video.size_bytes, video.sha256);
    Ok(())
}
