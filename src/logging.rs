//! Logging: human-readable lines on stdout, written whole and flushed per line (the platform streams stdout
//! as job events), every line redacted. Sync actions and the `tables` CLI log to stderr instead, because
//! their stdout is data. When the platform sets `KBC_LOGGER_ADDR`/`KBC_LOGGER_PORT`, events go to its
//! GELF server over TCP as null-terminated JSON instead of stdout.

use std::io::Write;
use std::net::TcpStream;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Where human-readable log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A normal run: stdout, info and above.
    Stdout,
    /// stdout is data (sync action results, CSV): logs on stderr.
    Stderr,
    /// Sync actions: only errors, on stderr (stdout must be exactly one JSON document).
    Quiet,
}

/// Sets up the global subscriber. `gelf` is the platform's GELF server, when it set one.
pub fn init(target: Target, gelf: Option<(String, u16)>) {
    let default = match target {
        Target::Quiet => "error",
        _ => "info",
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("KBC_RUNNER_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("{default},hyper=warn,reqwest=warn,h2=warn"))
        });
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(LineWriter {
            stderr: target != Target::Stdout,
        })
        .with_target(false)
        .with_ansi(false)
        .without_time();
    let gelf_layer = gelf.and_then(|(host, port)| GelfLayer::connect(&host, port));
    // The platform still turns the whole stdout into one event when the job ends, so with GELF up every
    // line printed there too would show twice. If the GELF server cannot be reached, stdout it is.
    let fmt = (gelf_layer.is_none() || target != Target::Stdout).then_some(fmt);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(gelf_layer)
        .try_init();
}

/// Flushes the GELF connection (call before exiting). Standard streams are flushed per line already.
pub fn flush() {
    if let Some(sender) = GELF.get() {
        let (ack_tx, ack_rx) = channel();
        if let Ok(sender) = sender.lock() {
            let _ = sender.send(GelfMessage::Flush(ack_tx));
        }
        let _ = ack_rx.recv_timeout(Duration::from_secs(5));
    }
}

/// A writer that collects one event and writes it, redacted, in a single call, then flushes.
struct LineWriter {
    stderr: bool,
}

struct LineBuffer {
    stderr: bool,
    buf: Vec<u8>,
}

impl<'a> MakeWriter<'a> for LineWriter {
    type Writer = LineBuffer;
    fn make_writer(&'a self) -> LineBuffer {
        LineBuffer {
            stderr: self.stderr,
            buf: Vec::with_capacity(256),
        }
    }
}

impl Write for LineBuffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineBuffer {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buf);
        let text = crate::secrets::redact(&text);
        if self.stderr {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(text.as_bytes());
            let _ = err.flush();
        } else {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
    }
}

enum GelfMessage {
    Line(Vec<u8>),
    Flush(Sender<()>),
}

static GELF: OnceLock<Mutex<SyncSender<GelfMessage>>> = OnceLock::new();

/// Sends events to a GELF TCP server from a background thread, so logging never blocks on the network.
struct GelfLayer {
    host: String,
}

impl GelfLayer {
    fn connect(addr: &str, port: u16) -> Option<GelfLayer> {
        let stream = match TcpStream::connect((addr, port)) {
            Ok(s) => s,
            Err(e) => {
                // Plain stdout logging still works; say so there.
                println!("GELF logger at {addr}:{port} unreachable ({e}); logging to stdout only");
                return None;
            }
        };
        let (tx, rx) = sync_channel(10_000);
        std::thread::Builder::new()
            .name("gelf".into())
            .spawn(move || gelf_writer(stream, rx))
            .ok()?;
        let _ = GELF.set(Mutex::new(tx));
        Some(GelfLayer { host: hostname() })
    }
}

fn gelf_writer(mut stream: TcpStream, rx: Receiver<GelfMessage>) {
    for message in rx {
        match message {
            GelfMessage::Line(bytes) => {
                let _ = stream.write_all(&bytes);
            }
            GelfMessage::Flush(ack) => {
                let _ = stream.flush();
                let _ = ack.send(());
            }
        }
    }
}

/// The container's hostname: the GELF server drops messages whose `host` is not the container id prefix.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes a NUL-terminated name into it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "kbc-runner".to_owned()
    }
}

/// Syslog levels, as GELF wants them.
fn syslog_level(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

#[derive(Default)]
struct FieldCollector {
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl Visit for FieldCollector {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields
                .insert(format!("_{}", field.name()), text.into());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields
                .insert(format!("_{}", field.name()), value.into());
        }
    }
}

/// Builds one GELF message (without the terminating NUL).
pub fn gelf_message(
    host: &str,
    level: &Level,
    message: &str,
    fields: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let mut m = serde_json::Map::new();
    m.insert("version".into(), "1.1".into());
    m.insert("host".into(), host.into());
    m.insert(
        "short_message".into(),
        crate::secrets::redact(message).into_owned().into(),
    );
    m.insert("timestamp".into(), now.into());
    m.insert("level".into(), syslog_level(level).into());
    for (k, v) in fields {
        let v = match v {
            serde_json::Value::String(s) => crate::secrets::redact(&s).into_owned().into(),
            other => other,
        };
        m.insert(k, v);
    }
    serde_json::Value::Object(m)
}

impl<S: Subscriber> Layer<S> for GelfLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = FieldCollector::default();
        event.record(&mut fields);
        let value = gelf_message(
            &self.host,
            event.metadata().level(),
            &fields.message,
            fields.fields,
        );
        let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
        // The platform fails a job on messages over 200 KB; cut long ones well below that.
        if bytes.len() > 100_000 {
            let short: String = fields.message.chars().take(10_000).collect();
            let value = gelf_message(
                &self.host,
                event.metadata().level(),
                &short,
                Default::default(),
            );
            bytes = serde_json::to_vec(&value).unwrap_or_default();
        }
        bytes.push(0);
        if let Some(sender) = GELF.get()
            && let Ok(sender) = sender.lock()
        {
            let _ = sender.try_send(GelfMessage::Line(bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelf_message_has_required_fields() {
        let m = gelf_message("abc123", &Level::WARN, "hello", Default::default());
        assert_eq!(m["host"], "abc123");
        assert_eq!(m["level"], 4);
        assert_eq!(m["short_message"], "hello");
        assert!(m["timestamp"].as_f64().unwrap() > 1.0e9);
        assert!(!hostname().is_empty());
    }
}
