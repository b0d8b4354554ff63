//! `aiprod jobs watch`: the job's events through the SDK's resumable watch, drawn as live progress
//! bars (one for the job: state, shots rendered, cost so far against the quote; one per shot:
//! backend, attempt, cost, quality), or printed one line per event when stderr is not a terminal,
//! or one JSON line per event with `--output json`.

use super::{CliError, Output, backend_name, state_name, to_json, usd};
use aiprod_sdk::{Client, StreamExt, pb};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use pb::job_event::Payload;
use std::collections::HashMap;
use std::io::IsTerminal;

/// Steps of a shot's bar: started, rendered, quality checked.
const SHOT_STEPS: u64 = 3;

struct Bars {
    multi: MultiProgress,
    job: ProgressBar,
    shots: HashMap<String, ProgressBar>,
    order: Vec<String>,
    state: i32,
    metered: i64,
    quote: i64,
}

impl Bars {
    fn new(job: &pb::Job) -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let bar = multi.add(ProgressBar::new(u64::from(job.shots_total.max(1))));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:.bold} [{bar:30.green/white}] {pos}/{len} shots  {msg}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        bar.set_prefix(job.job_id.clone());
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        let mut bars = Bars {
            multi,
            job: bar,
            shots: HashMap::new(),
            order: Vec::new(),
            state: job.state,
            metered: 0,
            quote: job.quote.as_ref().map_or(0, |q| q.total_micros),
        };
        for shot in &job.shots {
            bars.shot(&shot.shot_id);
        }
        bars.refresh();
        bars
    }

    fn shot(&mut self, shot_id: &str) -> ProgressBar {
        if let Some(bar) = self.shots.get(shot_id) {
            return bar.clone();
        }
        let bar = self.multi.add(ProgressBar::new(SHOT_STEPS));
        bar.set_style(
            ProgressStyle::with_template("  {prefix:<12} [{bar:12.cyan/blue}] {msg}")
                .expect("template")
                .progress_chars("=> "),
        );
        bar.set_prefix(shot_id.to_string());
        bar.set_message("queued");
        self.shots.insert(shot_id.to_string(), bar.clone());
        self.order.push(shot_id.to_string());
        bar
    }

    fn refresh(&self) {
        self.job.set_message(format!(
            "{}  cost so far {} of quote {}",
            state_name(self.state),
            usd(self.metered),
            usd(self.quote)
        ));
    }

    fn apply(&mut self, event: &pb::JobEvent) {
        self.state = event.state;
        match &event.payload {
            Some(Payload::ManifestReady(m)) => {
                self.job.set_length(u64::from(m.shot_count.max(1)));
                self.quote = m.quote_micros;
            }
            Some(Payload::ManifestUpdated(m)) => self.quote = m.quote_micros,
            Some(Payload::ShotStarted(s)) => {
                let bar = self.shot(&s.shot_id);
                bar.set_position(1);
                bar.set_message(format!(
                    "rendering on {} (attempt {})",
                    backend_name(s.backend),
                    s.attempt
                ));
            }
            Some(Payload::ShotRendered(s)) => {
                let bar = self.shot(&s.shot_id);
                bar.set_position(2);
                bar.set_message(format!(
                    "rendered on {}  {}  {} s",
                    backend_name(s.backend),
                    usd(s.cost_micros),
                    s.duration_s
                ));
                self.job.inc(1);
            }
            Some(Payload::BackendFallback(f)) => {
                let bar = self.shot(&f.shot_id);
                bar.set_position(0);
                bar.set_message(format!(
                    "{} → {}: {}",
                    backend_name(f.from_backend),
                    backend_name(f.to_backend),
                    f.reason
                ));
            }
            Some(Payload::QualityChecked(q)) => {
                let bar = self.shot(&q.shot_id);
                if q.rerender {
                    bar.set_position(0);
                    bar.set_message(format!(
                        "quality {:.2} < {:.2}: re-render",
                        q.quality, q.threshold
                    ));
                    self.job.set_position(self.job.position().saturating_sub(1));
                } else {
                    bar.set_position(SHOT_STEPS);
                    bar.set_message(format!(
                        "{}  quality {:.2} {}",
                        backend_name(q.backend),
                        q.quality,
                        if q.passed { "✓" } else { "below the floor" }
                    ));
                }
            }
            Some(Payload::CostUpdated(c)) => {
                self.metered = c.metered_micros;
                self.quote = c.quote_micros;
            }
            Some(Payload::Delivered(d)) => {
                self.metered = d.billed_micros;
                self.job.set_position(self.job.length().unwrap_or(0));
            }
            _ => {}
        }
        self.refresh();
    }

    fn finish(&self) {
        for id in &self.order {
            if let Some(bar) = self.shots.get(id) {
                bar.finish();
            }
        }
        self.job.finish();
    }
}

/// One line per event, for logs and pipes.
fn line(event: &pb::JobEvent) -> String {
    let what = match &event.payload {
        Some(Payload::StateChanged(s)) => {
            format!("{} → {}", state_name(s.from_state), state_name(s.to_state))
        }
        Some(Payload::ManifestReady(m)) => format!(
            "manifest ready: {} shots, quote {}",
            m.shot_count,
            usd(m.quote_micros)
        ),
        Some(Payload::ManifestUpdated(m)) => format!(
            "manifest revision {}, quote {}",
            m.revision,
            usd(m.quote_micros)
        ),
        Some(Payload::ShotStarted(s)) => format!(
            "{} rendering on {} (attempt {})",
            s.shot_id,
            backend_name(s.backend),
            s.attempt
        ),
        Some(Payload::ShotRendered(s)) => format!(
            "{} rendered on {}: {}",
            s.shot_id,
            backend_name(s.backend),
            usd(s.cost_micros)
        ),
        Some(Payload::BackendFallback(f)) => format!(
            "{} fell back {} → {}: {}",
            f.shot_id,
            backend_name(f.from_backend),
            backend_name(f.to_backend),
            f.reason
        ),
        Some(Payload::CostUpdated(c)) => format!(
            "cost so far {} of quote {}",
            usd(c.metered_micros),
            usd(c.quote_micros)
        ),
        Some(Payload::QualityChecked(q)) => format!(
            "{} quality {:.2} (floor {:.2}){}",
            q.shot_id,
            q.quality,
            q.threshold,
            if q.rerender { ", re-render" } else { "" }
        ),
        Some(Payload::BudgetAlert(b)) => format!("budget {} % used", b.threshold_percent),
        Some(Payload::Delivered(d)) => format!("delivered, billed {}", usd(d.billed_micros)),
        Some(Payload::Failed(f)) => format!("failed: {}", f.message),
        Some(Payload::Cancelled(c)) => format!("cancelled: {}", c.reason),
        None => String::new(),
    };
    format!(
        "#{:<3} {:<18} {what}",
        event.sequence,
        state_name(event.state)
    )
}

pub async fn watch(
    client: &Client,
    job_id: &str,
    after: u64,
    output: Output,
) -> Result<(), CliError> {
    let job = client
        .render()
        .get_job(pb::GetJobRequest {
            job_id: job_id.to_string(),
        })
        .await?
        .into_inner()
        .job
        .unwrap_or_default();
    let mut bars =
        (output == Output::Text && std::io::stderr().is_terminal()).then(|| Bars::new(&job));
    let mut last_state = job.state;
    let mut stream = Box::pin(client.watch_job(job_id.to_string(), after));
    while let Some(event) = stream.next().await {
        let event = event?;
        last_state = event.state;
        match (&mut bars, output) {
            (_, Output::Json) => out!("{}", to_json(&event, "aiprod.v1.JobEvent")),
            (Some(bars), _) => bars.apply(&event),
            (None, _) => out!("{}", line(&event)),
        }
    }
    if let Some(bars) = &bars {
        bars.finish();
    }
    if last_state == pb::JobState::Delivered as i32 {
        if output == Output::Text {
            out!("{job_id} DELIVERED: `aiprod jobs download {job_id}` fetches the video");
        }
        Ok(())
    } else {
        Err(CliError::JobNotDelivered(format!(
            "{job_id} ended {}",
            state_name(last_state)
        )))
    }
}
