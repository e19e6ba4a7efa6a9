//! `kubelab top`: a live view of a node's containers against their
//! limits: CPU used against request and limit, the share of CFS periods
//! throttled, memory working set against the limit, OOM kills, restarts, QoS,
//! and recent events. It reads the agent's read-only API (`/pods`,
//! `/stats/summary`, `/events`), so it runs wherever that port is reachable.
//!
//! - [`model`]: rows from successive readings (pure).
//! - [`table`]: number formats and the `--once` table.
//! - [`ui`]: the terminal screen (ratatui).

pub mod model;
pub mod table;
pub mod ui;

use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};

use crate::client::{ClientError, DEFAULT_SERVER, Event, NodeClient};
use model::{Row, RowFilter, Snapshot, SortKey, TopModel, parse_selector, sort_rows};

#[derive(clap::Args, Debug, Clone)]
pub struct TopArgs {
    /// The agent's read-only API (`--read-only-port`).
    #[arg(long, default_value = DEFAULT_SERVER, env = "KUBELAB_SERVER")]
    pub server: String,
    /// Print one plain table and exit (two readings `--interval` apart, for the rates).
    #[arg(long)]
    pub once: bool,
    /// Time between readings (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    pub interval: String,
    /// Only pods in this namespace.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Only pods whose labels match (`app=web,tier!=db,key,!key`).
    #[arg(long, short = 'l', value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Row order (`s` cycles it on screen).
    #[arg(long, value_enum, default_value_t = SortKey::Name)]
    pub sort: SortKey,
}

#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("--interval {0:?}: {1}")]
    Interval(String, String),
    #[error("--selector: {0}")]
    Selector(String),
    #[error("terminal: {0} (top needs a terminal; use --once for a plain table)")]
    Terminal(#[source] std::io::Error),
}

/// Reads a node: the snapshot behind each refresh.
struct Reader {
    client: NodeClient,
    origin: Instant,
    /// Older agents serve no `/events`; asked once.
    events_served: bool,
}

impl Reader {
    fn read(&mut self) -> Result<Snapshot, ClientError> {
        let before = self.origin.elapsed().as_secs_f64();
        let summary = self.client.summary()?;
        let after = self.origin.elapsed().as_secs_f64();
        let pods = self.client.pods()?;
        let events = if self.events_served {
            match self.client.events() {
                Ok(e) => Some(e),
                Err(e) if e.is_not_found() => {
                    self.events_served = false;
                    None
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        Ok(Snapshot {
            // The counters were read while the request was in flight.
            at: (before + after) / 2.0,
            pods,
            summary,
            events,
        })
    }
}

pub fn run(args: TopArgs) -> Result<(), TopError> {
    let interval = kubelab_rules::duration::parse_go_duration(&args.interval)
        .map_err(|e| TopError::Interval(args.interval.clone(), e.to_string()))?
        .max(Duration::from_millis(100));
    let filter = RowFilter {
        namespace: args.namespace.clone(),
        selector: match &args.selector {
            Some(s) => parse_selector(s).map_err(TopError::Selector)?,
            None => Vec::new(),
        },
        text: String::new(),
    };
    let mut reader = Reader {
        client: NodeClient::new(&args.server)?,
        origin: Instant::now(),
        events_served: true,
    };
    if args.once {
        let mut model = TopModel::default();
        model.update(&reader.read()?);
        std::thread::sleep(interval);
        let mut rows: Vec<Row> = model
            .update(&reader.read()?)
            .into_iter()
            .filter(|r| filter.matches(r))
            .collect();
        sort_rows(&mut rows, args.sort);
        print!("{}", table::render(&rows));
        return Ok(());
    }
    // Fail before taking over the terminal when the agent can't be reached.
    let first = reader.read()?;
    let mut terminal = ratatui::try_init().map_err(TopError::Terminal)?;
    let result = Screen::new(args.sort, filter).run(&mut terminal, &mut reader, first, interval);
    ratatui::restore();
    result
}

/// The interactive screen's state.
struct Screen {
    model: TopModel,
    rows: Vec<Row>,
    events: Vec<Event>,
    node: Option<crate::client::NodeStats>,
    /// The node's CPU count, read once: what the node's cpu figure is out of.
    node_cores: Option<u64>,
    sort: SortKey,
    filter: RowFilter,
    editing_filter: bool,
    warnings_only: bool,
    error: Option<String>,
    updated: Option<jiff::Zoned>,
}

impl Screen {
    fn new(sort: SortKey, filter: RowFilter) -> Self {
        Screen {
            model: TopModel::default(),
            rows: Vec::new(),
            events: Vec::new(),
            node: None,
            node_cores: None,
            sort,
            filter,
            editing_filter: false,
            warnings_only: true,
            error: None,
            updated: None,
        }
    }

    fn apply(&mut self, snap: Snapshot) {
        self.rows = self.model.update(&snap);
        self.events = snap.events.unwrap_or_default();
        self.node = Some(snap.summary.node);
        self.error = None;
        self.updated = Some(jiff::Zoned::now());
    }

    fn visible(&self) -> (Vec<Row>, Vec<Event>) {
        let mut rows: Vec<Row> = self
            .rows
            .iter()
            .filter(|r| self.filter.matches(r))
            .cloned()
            .collect();
        sort_rows(&mut rows, self.sort);
        let events = self
            .events
            .iter()
            .filter(|e| self.filter.matches_event(e, &rows))
            .cloned()
            .collect();
        (rows, events)
    }

    fn run(
        mut self,
        terminal: &mut ratatui::DefaultTerminal,
        reader: &mut Reader,
        first: Snapshot,
        interval: Duration,
    ) -> Result<(), TopError> {
        self.apply(first);
        self.node_cores = reader.client.machine_cpu_cores().ok().flatten();
        let server = reader.client.server();
        let mut next_read = Instant::now() + interval;
        loop {
            if Instant::now() >= next_read {
                match reader.read() {
                    Ok(snap) => self.apply(snap),
                    Err(e) => self.error = Some(e.to_string()),
                }
                next_read += interval;
                if next_read < Instant::now() {
                    next_read = Instant::now() + interval;
                }
            }
            let (rows, events) = self.visible();
            terminal
                .draw(|f| {
                    ui::draw(
                        f,
                        &ui::View {
                            server: &server,
                            node: self.node.as_ref(),
                            node_cores: self.node_cores,
                            rows: &rows,
                            events: &events,
                            sort: self.sort,
                            warnings_only: self.warnings_only,
                            filter_text: &self.filter.text,
                            editing_filter: self.editing_filter,
                            error: self.error.as_deref(),
                            updated: self.updated.clone(),
                        },
                    )
                })
                .map_err(TopError::Terminal)?;
            let wait = next_read.saturating_duration_since(Instant::now());
            if event::poll(wait).map_err(TopError::Terminal)?
                && let TermEvent::Key(key) = event::read().map_err(TopError::Terminal)?
                && key.kind == KeyEventKind::Press
                && self.on_key(key.code, key.modifiers)
            {
                return Ok(());
            }
        }
    }

    /// Handles one key; true to quit.
    fn on_key(&mut self, code: KeyCode, mods: KeyModifiers) -> bool {
        if code == KeyCode::Char('c') && mods.contains(KeyModifiers::CONTROL) {
            return true;
        }
        if self.editing_filter {
            match code {
                KeyCode::Enter => self.editing_filter = false,
                KeyCode::Esc => {
                    self.filter.text.clear();
                    self.editing_filter = false;
                }
                KeyCode::Backspace => {
                    self.filter.text.pop();
                }
                KeyCode::Char(c) => self.filter.text.push(c),
                _ => {}
            }
            return false;
        }
        match code {
            KeyCode::Char('q') | KeyCode::Esc => return true,
            KeyCode::Char('s') => self.sort = self.sort.next(),
            KeyCode::Char('/') => self.editing_filter = true,
            KeyCode::Char('e') => self.warnings_only = !self.warnings_only,
            _ => {}
        }
        false
    }
}
