//! Emoji-10: the same emoji drawn by up to ten artists (the `@iconify-json/*` emoji sets; see
//! `shared/specs/datasets.md`). This module reads IconifyJSON sets, builds the SVG of an icon,
//! matches icons across sets into classes and fixes the class-disjoint split. Rasterising is
//! left to the caller (`examples/build_emoji10.rs` uses `resvg`).
//!
//! - Class key: a `chars` key (hex codepoints joined by `-`), lower-cased, with `fe0f`
//!   (variation selector 16) dropped; keys with a skin-tone modifier 1f3fb–1f3ff are excluded.
//! - Sets without a `chars` table are matched by icon name through the name → key tables of the
//!   sets that have one (first set in the given order wins for a name).
//! - A class is kept when at least `min_styles` sets draw it (Emoji-10 uses 8).
//! - Split: classes ordered by the FNV-1a 64-bit hash of their key (ties by key); the first
//!   half (rounded up) trains, the rest tests. Fixed for fixed package versions.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::data::DataError;

/// Iconify's default icon side when neither the icon nor its set gives one.
const DEFAULT_SIDE: f64 = 16.0;

#[derive(Debug, Clone, Default, Deserialize)]
struct RawIcon {
    #[serde(default)]
    body: String,
    #[serde(default)]
    parent: Option<String>,
    left: Option<f64>,
    top: Option<f64>,
    width: Option<f64>,
    height: Option<f64>,
    #[serde(rename = "hFlip", default)]
    h_flip: bool,
    #[serde(rename = "vFlip", default)]
    v_flip: bool,
    #[serde(default)]
    rotate: u32,
}

#[derive(Debug, Clone, Deserialize)]
struct RawSet {
    #[serde(default)]
    icons: BTreeMap<String, RawIcon>,
    #[serde(default)]
    aliases: BTreeMap<String, RawIcon>,
    #[serde(default)]
    chars: BTreeMap<String, String>,
    left: Option<f64>,
    top: Option<f64>,
    width: Option<f64>,
    height: Option<f64>,
}

/// One IconifyJSON icon set.
#[derive(Debug, Clone)]
pub struct IconSet {
    /// Short name used for output files (`noto`, `twemoji`, …).
    pub name: String,
    raw: RawSet,
}

/// An icon with its aliases followed: body, view box and the transformations to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedIcon {
    /// SVG content without the `<svg>` element.
    pub body: String,
    /// View box `(left, top, width, height)` of the untransformed body.
    pub view_box: (f64, f64, f64, f64),
    /// Mirror left-right.
    pub h_flip: bool,
    /// Mirror top-bottom.
    pub v_flip: bool,
    /// Clockwise quarter turns (0–3), applied after the flips.
    pub rotate: u32,
}

impl IconSet {
    /// Parses an IconifyJSON document (`icons.json` of an `@iconify-json/*` package, or a
    /// `json/<set>.json` of `@iconify/json`); `chars_json` is the package's separate
    /// `chars.json` (codepoint key → icon name), used when given, else the document's own
    /// `chars` member if any.
    pub fn parse(
        name: &str,
        icons_json: &str,
        chars_json: Option<&str>,
    ) -> Result<Self, DataError> {
        let mut raw: RawSet = serde_json::from_str(icons_json).map_err(|e| {
            DataError::Invalid(format!("icon set {name}: invalid IconifyJSON: {e}"))
        })?;
        if let Some(c) = chars_json {
            raw.chars = serde_json::from_str(c).map_err(|e| {
                DataError::Invalid(format!("icon set {name}: invalid chars.json: {e}"))
            })?;
        }
        Ok(IconSet {
            name: name.to_string(),
            raw,
        })
    }

    /// True when the set maps codepoints to icon names itself.
    pub fn has_chars(&self) -> bool {
        !self.raw.chars.is_empty()
    }

    /// Names of all icons and aliases, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .raw
            .icons
            .keys()
            .chain(self.raw.aliases.keys())
            .map(String::as_str)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Follows `aliases[name].parent` (at most 16 steps, so a cycle ends) to an icon; an alias's
    /// own left/top/width/height override its parent's, flips combine by exclusive or and
    /// rotations add. Sizes default to the set's, then to 16.
    pub fn resolve(&self, name: &str) -> Option<ResolvedIcon> {
        let (mut left, mut top, mut width, mut height) = (None, None, None, None);
        let (mut h_flip, mut v_flip, mut rotate) = (false, false, 0u32);
        let mut cur = name;
        for _ in 0..16 {
            let (icon, is_alias) = match self.raw.icons.get(cur) {
                Some(i) => (i, false),
                None => (self.raw.aliases.get(cur)?, true),
            };
            left = left.or(icon.left);
            top = top.or(icon.top);
            width = width.or(icon.width);
            height = height.or(icon.height);
            h_flip ^= icon.h_flip;
            v_flip ^= icon.v_flip;
            rotate += icon.rotate;
            if !is_alias {
                let s = &self.raw;
                return Some(ResolvedIcon {
                    body: icon.body.clone(),
                    view_box: (
                        left.or(s.left).unwrap_or(0.0),
                        top.or(s.top).unwrap_or(0.0),
                        width.or(s.width).unwrap_or(DEFAULT_SIDE),
                        height.or(s.height).unwrap_or(DEFAULT_SIDE),
                    ),
                    h_flip,
                    v_flip,
                    rotate: rotate % 4,
                });
            }
            cur = icon.parent.as_deref()?;
        }
        None
    }
}

impl ResolvedIcon {
    /// View box of the transformed icon: a quarter turn about the centre swaps width and height.
    pub fn output_view_box(&self) -> (f64, f64, f64, f64) {
        let (l, t, w, h) = self.view_box;
        if self.rotate % 2 == 1 {
            let (cx, cy) = (l + w / 2.0, t + h / 2.0);
            (cx - h / 2.0, cy - w / 2.0, h, w)
        } else {
            (l, t, w, h)
        }
    }

    /// A standalone SVG document: `<svg viewBox="l t w h">` around the body, which is wrapped in
    /// a `<g transform>` for flips (about the box centre) and rotation (about the same centre).
    pub fn to_svg(&self) -> String {
        let (l, t, w, h) = self.view_box;
        let (cx, cy) = (l + w / 2.0, t + h / 2.0);
        let mut tf = Vec::new();
        if self.rotate != 0 {
            tf.push(format!("rotate({} {cx} {cy})", 90 * self.rotate));
        }
        if self.h_flip || self.v_flip {
            let sx = if self.h_flip { -1 } else { 1 };
            let sy = if self.v_flip { -1 } else { 1 };
            tf.push(format!(
                "translate({cx} {cy}) scale({sx} {sy}) translate({} {})",
                -cx, -cy
            ));
        }
        let body = if tf.is_empty() {
            self.body.clone()
        } else {
            format!("<g transform=\"{}\">{}</g>", tf.join(" "), self.body)
        };
        let (ol, ot, ow, oh) = self.output_view_box();
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" xmlns:xlink=\"http://www.w3.org/1999/xlink\" \
             viewBox=\"{ol} {ot} {ow} {oh}\" width=\"{ow}\" height=\"{oh}\">{body}</svg>"
        )
    }
}

/// The class key of a `chars` key: lower-cased codepoints joined by `-`, `fe0f` dropped;
/// `None` for skin-tone variants (any of 1f3fb–1f3ff) and for keys left empty.
pub fn class_key(chars_key: &str) -> Option<String> {
    let mut parts = Vec::new();
    for p in chars_key.split('-') {
        let p = p.trim().to_ascii_lowercase();
        if p.is_empty() || p == "fe0f" {
            continue;
        }
        if matches!(p.as_str(), "1f3fb" | "1f3fc" | "1f3fd" | "1f3fe" | "1f3ff") {
            return None;
        }
        parts.push(p);
    }
    (!parts.is_empty()).then(|| parts.join("-"))
}

/// FNV-1a, 64 bit: a fixed, documented hash so the split never depends on the standard
/// library's randomised hasher.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// One kept class: its key, split side and the icon each set draws it with.
#[derive(Debug, Clone, PartialEq)]
pub struct EmojiClass {
    /// Class key (see [`class_key`]); also its folder name.
    pub key: String,
    /// True for the test half of the class-disjoint split.
    pub test: bool,
    /// `(set index, icon name)` for every set drawing the class, in set order.
    pub icons: Vec<(usize, String)>,
}

/// Matches the icons of `sets` into classes, keeps those drawn by at least `min_styles` sets
/// and splits them (see the module documentation). Classes come sorted by key.
pub fn plan(sets: &[IconSet], min_styles: usize) -> Vec<EmojiClass> {
    // key -> set index -> icon name; the first mapping found for a (key, set) pair wins.
    let mut found: BTreeMap<String, BTreeMap<usize, String>> = BTreeMap::new();
    let mut by_name: BTreeMap<String, String> = BTreeMap::new();
    for (si, s) in sets.iter().enumerate() {
        for (k, name) in &s.raw.chars {
            let Some(key) = class_key(k) else { continue };
            by_name.entry(name.clone()).or_insert_with(|| key.clone());
            if s.resolve(name).is_some() {
                found
                    .entry(key)
                    .or_default()
                    .entry(si)
                    .or_insert_with(|| name.clone());
            }
        }
    }
    for (si, s) in sets.iter().enumerate() {
        if s.has_chars() {
            continue;
        }
        for name in s.names() {
            if let Some(key) = by_name.get(name) {
                if s.resolve(name).is_some() {
                    found
                        .entry(key.clone())
                        .or_default()
                        .entry(si)
                        .or_insert_with(|| name.to_string());
                }
            }
        }
    }
    let mut kept: Vec<EmojiClass> = found
        .into_iter()
        .filter(|(_, m)| m.len() >= min_styles.max(1))
        .map(|(key, m)| EmojiClass {
            key,
            test: false,
            icons: m.into_iter().collect(),
        })
        .collect();
    let mut order: Vec<usize> = (0..kept.len()).collect();
    order.sort_by_key(|&i| (fnv1a64(kept[i].key.as_bytes()), kept[i].key.clone()));
    let n_train = kept.len().div_ceil(2);
    for &i in &order[n_train..] {
        kept[i].test = true;
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_keys_drop_fe0f_and_skin_tones() {
        assert_eq!(class_key("1F600").as_deref(), Some("1f600"));
        assert_eq!(class_key("2764-fe0f").as_deref(), Some("2764"));
        assert_eq!(class_key("1f44d-1f3fd"), None);
        assert_eq!(class_key("fe0f"), None);
        assert_eq!(
            class_key("1f468-200d-1f469-200d-1f467").as_deref(),
            Some("1f468-200d-1f469-200d-1f467")
        );
    }

    #[test]
    fn fnv1a_matches_its_published_test_vectors() {
        // Reference values of the FNV specification (draft-eastlake-fnv): "" and "a".
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    }
}
