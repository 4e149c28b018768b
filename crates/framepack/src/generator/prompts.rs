//! Prompts that change over time: `[0s: a cat sits] [2s-4s: the cat jumps] untagged default`.
//!
//! Each `[<t>s: text]` or `[<t0>s-<t1>s: text]` holds from `t` (to `t1`, else until the next
//! prompt takes over); text outside brackets is the default for times no tag covers (when there
//! is none, the earliest tag also covers the time before it). A section uses the prompt active
//! at the play time of its first frame, so boundaries snap to section starts — as
//! FramePack-Studio does. The order in which sections are generated does not matter: the
//! inverted loop looks prompts up by the time its section lands in the video.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::packing::{FPS, SectionPlan};

/// One `[start-end: text]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct TimedPrompt {
    /// Seconds from the start of the video.
    pub start: f64,
    /// Optional end in seconds (exclusive).
    pub end: Option<f64>,
    /// The prompt.
    pub text: String,
}

/// A prompt, possibly with timestamps.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct PromptSchedule {
    /// Text outside any tag (trimmed; empty when there is none).
    pub default: String,
    /// Tagged prompts in the order written.
    pub timed: Vec<TimedPrompt>,
}

impl PromptSchedule {
    /// A single prompt for the whole video (no parsing of brackets).
    pub fn constant(text: impl Into<String>) -> Self {
        Self { default: text.into(), timed: Vec::new() }
    }

    /// Parses `[0s: …] [2s-4s: …] untagged`; see the module docs.
    pub fn parse(s: &str) -> Result<Self> {
        let mut default = String::new();
        let mut timed = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('[') {
            let after = &rest[open + 1..];
            if !after.trim_start().starts_with(|c: char| c.is_ascii_digit() || c == '.') {
                // Not a timestamp: ordinary text up to and including the bracket.
                default.push_str(&rest[..open + 1]);
                rest = after;
                continue;
            }
            default.push_str(&rest[..open]);
            let close = after.find(']').ok_or_else(|| {
                Error::invalid(
                    "prompt",
                    format!("unclosed timestamp `[{}`", after.chars().take(20).collect::<String>()),
                )
            })?;
            let body = &after[..close];
            let colon = body.find(':').ok_or_else(|| {
                Error::invalid("prompt", format!("timestamp `[{body}]` needs `: text` after the time"))
            })?;
            let (start, end) = parse_times(body[..colon].trim())?;
            let text = body[colon + 1..].trim().to_string();
            timed.push(TimedPrompt { start, end, text });
            rest = &after[close + 1..];
        }
        default.push_str(rest);
        let default = default.split_whitespace().collect::<Vec<_>>().join(" ");
        Ok(Self { default, timed })
    }

    /// The prompt active at `t` seconds.
    pub fn at(&self, t: f64) -> &str {
        const EPS: f64 = 1e-9;
        let active = self.timed.iter().filter(|p| p.start <= t + EPS && p.end.is_none_or(|e| t < e - EPS)).fold(
            None::<&TimedPrompt>,
            |best, p| match best {
                Some(b) if b.start > p.start => Some(b),
                _ => Some(p),
            },
        );
        if let Some(p) = active {
            return &p.text;
        }
        if !self.default.is_empty() || self.timed.is_empty() {
            return &self.default;
        }
        let earliest = self.timed.iter().fold(&self.timed[0], |b, p| if p.start < b.start { p } else { b });
        if earliest.start > t { &earliest.text } else { &self.default }
    }

    /// The prompt of every section of `plan`, in generation order.
    pub fn for_sections(&self, plan: &SectionPlan) -> Vec<String> {
        plan.sections().map(|s| self.at(s.frames.start as f64 / FPS).to_string()).collect()
    }

    /// The distinct prompt texts, in first-use order.
    pub fn texts(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for t in std::iter::once(self.default.as_str()).chain(self.timed.iter().map(|p| p.text.as_str())) {
            if !out.contains(&t) {
                out.push(t);
            }
        }
        out
    }
}

fn parse_seconds(s: &str) -> Result<f64> {
    let num = s.trim().strip_suffix('s').unwrap_or(s.trim()).trim();
    match num.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(Error::invalid("prompt", format!("bad time `{s}` in a timestamp (expected e.g. `2s` or `1.5s`)"))),
    }
}

fn parse_times(s: &str) -> Result<(f64, Option<f64>)> {
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (parse_seconds(a)?, parse_seconds(b)?);
            if b <= a {
                return Err(Error::invalid("prompt", format!("timestamp `{s}` ends before it starts")));
            }
            Ok((a, Some(b)))
        }
        None => Ok((parse_seconds(s)?, None)),
    }
}

impl FromStr for PromptSchedule {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl fmt::Display for PromptSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for p in &self.timed {
            if !first {
                write!(f, " ")?;
            }
            first = false;
            match p.end {
                Some(e) => write!(f, "[{}s-{}s: {}]", p.start, e, p.text)?,
                None => write!(f, "[{}s: {}]", p.start, p.text)?,
            }
        }
        if !self.default.is_empty() {
            if !first {
                write!(f, " ")?;
            }
            write!(f, "{}", self.default)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packing::SectionOrder;

    #[test]
    fn parses_tags_and_default() {
        let p = PromptSchedule::parse("[0s: a cat sits] [2s-4s: the cat jumps] in a garden [x] ").unwrap();
        assert_eq!(p.default, "in a garden [x]");
        assert_eq!(p.timed.len(), 2);
        assert_eq!(p.timed[1], TimedPrompt { start: 2.0, end: Some(4.0), text: "the cat jumps".into() });
        assert_eq!(p.at(0.0), "a cat sits");
        assert_eq!(p.at(2.5), "the cat jumps");
        assert_eq!(p.at(4.0), "a cat sits");
        assert_eq!(PromptSchedule::parse(&p.to_string()).unwrap(), p);
        assert_eq!(PromptSchedule::parse("plain").unwrap().at(3.0), "plain");
        let only = PromptSchedule::parse("[1s: later] [3s: last]").unwrap();
        assert_eq!(only.at(0.0), "later");
        assert_eq!(only.at(3.5), "last");
        assert_eq!(only.texts(), vec!["", "later", "last"]);
    }

    #[test]
    fn bad_timestamps_are_errors() {
        for bad in ["[2s a]", "[2s: a", "[3s-1s: a]", "[1.x: a]"] {
            assert!(matches!(PromptSchedule::parse(bad), Err(Error::Invalid { what: "prompt", .. })), "{bad}");
        }
    }

    #[test]
    fn sections_take_the_prompt_of_their_play_time_in_both_orders() {
        let p = PromptSchedule::parse("[0s: A] [2.4s: B]").unwrap();
        // W = 9: sections start at frames 1, 37, 73, 109 → 0.03 s, 1.23 s, 2.43 s, 3.63 s.
        let f = SectionPlan::new(4, 9, SectionOrder::Forward).unwrap();
        assert_eq!(p.for_sections(&f), ["A", "A", "B", "B"]);
        let i = SectionPlan::new(4, 9, SectionOrder::Inverted).unwrap();
        assert_eq!(p.for_sections(&i), ["B", "B", "A", "A"]);
    }
}
