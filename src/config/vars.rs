//! Typed access to variables, recording each name read.

use std::{fmt, str::FromStr, time::Duration};

/// A configuration error: always names the variable, fits on one line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

impl ConfigError {
    pub fn new(var: &'static str, message: impl Into<String>) -> Self {
        Self {
            var,
            message: message.into(),
        }
    }
}

pub(crate) struct Vars<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    pub(super) read: Vec<&'static str>,
}

impl<'a> Vars<'a> {
    pub(crate) fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            lookup,
            read: Vec::new(),
        }
    }

    /// The value if set and not blank.
    pub(crate) fn get(&mut self, name: &'static str) -> Option<String> {
        self.read.push(name);
        (self.lookup)(name)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    pub(crate) fn string_or(&mut self, name: &'static str, default: &str) -> String {
        self.get(name).unwrap_or_else(|| default.to_string())
    }

    pub(crate) fn parse_opt<T>(&mut self, name: &'static str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.get(name) {
            None => Ok(None),
            Some(raw) => raw
                .parse()
                .map(Some)
                .map_err(|e| ConfigError::new(name, format!("cannot parse {raw:?}: {e}"))),
        }
    }

    pub(crate) fn parse_or<T>(&mut self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        Ok(self.parse_opt(name)?.unwrap_or(default))
    }

    pub(crate) fn bool_or(
        &mut self,
        name: &'static str,
        default: bool,
    ) -> Result<bool, ConfigError> {
        match self.get(name).as_deref() {
            None => Ok(default),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some(other) => Err(ConfigError::new(
                name,
                format!("expected true or false, got {other:?}"),
            )),
        }
    }

    /// A humantime duration such as `50m`, `30s`, `1h 30m`.
    pub(crate) fn duration_or(
        &mut self,
        name: &'static str,
        default: &str,
    ) -> Result<Duration, ConfigError> {
        let raw = self.string_or(name, default);
        humantime::parse_duration(&raw).map_err(|e| {
            ConfigError::new(
                name,
                format!("cannot parse {raw:?} as a duration like 30s or 50m: {e}"),
            )
        })
    }
}
