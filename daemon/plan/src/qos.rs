//! Shaping rates and the voice reservation derived from the line (spec B1-B4).

use router_config::Checked;
use serde::Serialize;

/// The QoS plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QosPlan {}

/// The QoS plan for this config.
pub fn qos(_checked: &Checked) -> QosPlan {
    QosPlan {}
}

impl QosPlan {
    /// Readable text.
    pub fn render(&self) -> String {
        String::new()
    }
}
