//! Every string of the pages, in message files (`locales/<lang>/*.ftl`, Fluent), embedded in the
//! binary at compile time. Vietnamese is the default; English second.

use std::borrow::Cow;
use std::collections::HashMap;

use fluent_templates::fluent_bundle::FluentValue;
use fluent_templates::{LanguageIdentifier, Loader};

use crate::format::Lang;

fluent_templates::static_loader! {
    static LOCALES = {
        locales: "./locales",
        fallback_language: "vi",
        // No Unicode isolation marks around arguments: they are plain numbers and names, and
        // the marks would show as boxes on some old phones.
        customise: |bundle| bundle.set_use_isolating(false),
    };
}

fn language(lang: Lang) -> LanguageIdentifier {
    let id = match lang {
        Lang::Vi => "vi",
        Lang::En => "en",
    };
    id.parse().unwrap_or_default()
}

/// The messages of one language.
#[derive(Clone, Debug)]
pub struct Tr {
    lang: Lang,
    id: LanguageIdentifier,
}

impl Tr {
    /// The messages of `lang`.
    pub fn new(lang: Lang) -> Self {
        Tr {
            lang,
            id: language(lang),
        }
    }

    /// The language.
    pub fn lang(&self) -> Lang {
        self.lang
    }

    /// The message `key`; a missing one is shown as its key (a unit test keeps both message
    /// files complete, so this only shows while someone adds a message).
    pub fn t(&self, key: &str) -> String {
        LOCALES
            .try_lookup(&self.id, key)
            .unwrap_or_else(|| key.to_string())
    }

    /// The messages `keys`, in order (a table's or a download's column headings).
    pub fn all(&self, keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| self.t(k)).collect()
    }

    /// The message `key` with arguments, given as text (numbers are formatted by the caller
    /// in the reader's locale; Fluent's own number formatting ignores it).
    pub fn with(&self, key: &str, args: &[(&'static str, String)]) -> String {
        let args: HashMap<Cow<'static, str>, FluentValue<'_>> = args
            .iter()
            .map(|(k, v)| (Cow::Borrowed(*k), FluentValue::from(v.as_str())))
            .collect();
        LOCALES
            .try_lookup_with_args(&self.id, key, &args)
            .unwrap_or_else(|| key.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> std::collections::BTreeSet<String> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with(' ') && l.contains(" = "))
            .filter_map(|l| l.split(" = ").next().map(str::to_string))
            .collect()
    }

    #[test]
    fn both_languages_have_every_message() {
        let vi = keys(include_str!("../locales/vi/main.ftl"));
        let en = keys(include_str!("../locales/en/main.ftl"));
        assert!(vi.len() > 50);
        let only_vi: Vec<_> = vi.difference(&en).collect();
        let only_en: Vec<_> = en.difference(&vi).collect();
        assert!(only_vi.is_empty(), "missing in English: {only_vi:?}");
        assert!(only_en.is_empty(), "missing in Vietnamese: {only_en:?}");
    }

    #[test]
    fn messages_come_in_the_reader_s_language_with_their_arguments() {
        let vi = Tr::new(Lang::Vi);
        let en = Tr::new(Lang::En);
        assert_eq!(vi.t("nav-home"), "Trang chủ");
        assert_eq!(en.t("nav-home"), "Home");
        assert_eq!(
            vi.with("updated-at", &[("time", "14:05 01/12/2026".into())]),
            "Cập nhật lúc 14:05 01/12/2026"
        );
        assert_eq!(en.t("no-such-key"), "no-such-key");
    }
}
