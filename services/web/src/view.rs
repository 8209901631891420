//! What the pages show, already formatted in the reader's language: the gateway's answers
//! turned into rows of text. Templates only print these; every number, date and name is
//! formatted here, once, by `format`.

use agriportal_platform::reference::{Partner, Reference, HOUSEHOLD_TARGET};
use agriportal_proto::gateway::v1 as pb;

use crate::format::{self, Lang};
use crate::i18n::Tr;

/// Sales and households of one row (a partner, a region, a province, the nation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// Households onboarded.
    pub households: i64,
    /// Households whose account is active.
    pub active: i64,
    /// Grams sold.
    pub grams: i64,
    /// Đồng.
    pub value_vnd: i64,
    /// Orders.
    pub orders: i64,
}

/// A row of figures, formatted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// What the row is (a partner's, a region's or a province's name).
    pub name: String,
    /// A link for the name, if it has a page.
    pub href: Option<String>,
    /// Households onboarded.
    pub households: String,
    /// Households whose account is active (the cards show it; the tables and their CSV do
    /// not, since partner and region rows have no such figure).
    pub active: String,
    /// Tonnes.
    pub tonnes: String,
    /// Value with its currency.
    pub value: String,
    /// Value, the number alone (tables whose header names the unit).
    pub value_number: String,
    /// Orders.
    pub orders: String,
    /// The raw figures (sorting, CSV).
    pub raw: Figures,
}

impl Row {
    /// `figures` named `name`, formatted in `lang`.
    pub fn new(name: String, href: Option<String>, figures: Figures, lang: Lang) -> Self {
        Row {
            name,
            href,
            households: format::integer(figures.households, lang),
            active: format::integer(figures.active, lang),
            tonnes: format::tonnes(figures.grams, lang),
            value: format::money_vnd(figures.value_vnd, lang),
            value_number: format::integer(figures.value_vnd, lang),
            orders: format::integer(figures.orders, lang),
            raw: figures,
        }
    }

    /// The row as CSV cells: figures ungrouped, so a spreadsheet reads them as numbers, with
    /// the reader's decimal separator for tonnes (a Vietnamese spreadsheet reads `1234,5`).
    pub fn cells(&self, lang: Lang) -> Vec<String> {
        let f = &self.raw;
        vec![
            self.name.clone(),
            f.households.to_string(),
            plain_tonnes(f.grams, lang),
            f.value_vnd.to_string(),
            f.orders.to_string(),
        ]
    }
}

/// Tonnes with one decimal, ungrouped, rounded half away from zero (CSV cells).
pub fn plain_tonnes(grams: i64, lang: Lang) -> String {
    let tenths = (i128::from(grams) + if grams < 0 { -50_000 } else { 50_000 }) / 100_000;
    let sep = match lang {
        Lang::Vi => ',',
        Lang::En => '.',
    };
    let sign = if tenths < 0 { "-" } else { "" };
    let tenths = tenths.unsigned_abs();
    format!("{sign}{}{sep}{}", tenths / 10, tenths % 10)
}

/// Money, short: "21,7 tỷ đồng" / "21.7B VND" (exact figures are in the tables).
pub fn short_money(dong: i64, lang: Lang) -> String {
    let unit = match lang {
        Lang::Vi => "đồng",
        Lang::En => "VND",
    };
    format!("{}{}{unit}", format::compact(dong, lang), format::NBSP)
}

/// The column headers of [`Row::cells`].
pub fn row_headers(tr: &Tr, first: &str) -> Vec<String> {
    vec![
        tr.t(first),
        tr.t("col-households"),
        tr.t("col-tonnes"),
        tr.t("col-value"),
        tr.t("col-orders"),
    ]
}

fn sales(s: Option<&pb::Sales>) -> (i64, i64, i64) {
    s.map_or((0, 0, 0), |s| (s.grams, s.value_vnd, s.orders))
}

/// The national figures of a summary.
pub fn national_figures(n: &pb::NationalSummary) -> Figures {
    let (grams, value_vnd, orders) = sales(n.sales.as_ref());
    let hh = n.households.unwrap_or_default();
    Figures {
        households: hh.onboarded,
        active: hh.active,
        grams,
        value_vnd,
        orders,
    }
}

/// A province's figures.
pub fn province_figures(p: &pb::ProvinceSummary) -> Figures {
    let (grams, value_vnd, orders) = sales(p.sales.as_ref());
    let hh = p.households.unwrap_or_default();
    Figures {
        households: hh.onboarded,
        active: hh.active,
        grams,
        value_vnd,
        orders,
    }
}

/// The partner split of a summary's households and sales (households by partner; sales by
/// partner): one row per marketplace.
pub fn partner_rows(
    households: Option<&pb::Households>,
    by_partner: Option<&pb::SalesByPartner>,
    lang: Lang,
) -> Vec<Row> {
    let hh = households.cloned().unwrap_or_default();
    let split = by_partner.cloned().unwrap_or_default();
    Partner::ALL
        .into_iter()
        .map(|partner| {
            let (count, sold) = match partner {
                Partner::Postmart => (hh.postmart, split.postmart.as_ref()),
                Partner::Voso => (hh.voso, split.voso.as_ref()),
            };
            let (grams, value_vnd, orders) = sales(sold);
            let figures = Figures {
                households: count,
                active: 0,
                grams,
                value_vnd,
                orders,
            };
            Row::new(partner.name().to_string(), None, figures, lang)
        })
        .collect()
}

/// A region's name in the reader's language.
pub fn region_name(tr: &Tr, code: &str) -> String {
    match code {
        "north" | "central" | "south" => tr.t(&format!("region-{code}")),
        _ => tr.t("region-other"),
    }
}

/// One row per macro region of a national summary.
pub fn region_rows(n: &pb::NationalSummary, tr: &Tr) -> Vec<Row> {
    n.by_region
        .iter()
        .map(|r| {
            let figures = Figures {
                households: r.households_onboarded,
                active: 0,
                grams: r.grams,
                value_vnd: r.value_vnd,
                orders: r.orders,
            };
            Row::new(region_name(tr, &r.region), None, figures, tr.lang())
        })
        .collect()
}

/// How the province table is sorted (a GET parameter, so a sorted table is a link).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    /// By name, A to Z (Vietnamese order of the official names).
    Name,
    /// Most households first.
    Households,
    /// Most tonnes first.
    Tonnes,
    /// Highest value first.
    Value,
    /// Most orders first.
    Orders,
}

impl Sort {
    /// Every order, as offered in the form.
    pub const ALL: [Sort; 5] = [
        Sort::Households,
        Sort::Tonnes,
        Sort::Value,
        Sort::Orders,
        Sort::Name,
    ];

    /// From the `sort` parameter; an unknown value is the default (households).
    pub fn parse(value: Option<&str>) -> Sort {
        match value {
            Some("name") => Sort::Name,
            Some("tonnes") => Sort::Tonnes,
            Some("value") => Sort::Value,
            Some("orders") => Sort::Orders,
            _ => Sort::Households,
        }
    }

    /// The parameter's value.
    pub fn code(self) -> &'static str {
        match self {
            Sort::Name => "name",
            Sort::Households => "households",
            Sort::Tonnes => "tonnes",
            Sort::Value => "value",
            Sort::Orders => "orders",
        }
    }

    /// The option's label.
    pub fn label(self, tr: &Tr) -> String {
        tr.t(match self {
            Sort::Name => "sort-name",
            Sort::Households => "col-households",
            Sort::Tonnes => "col-tonnes",
            Sort::Value => "col-value",
            Sort::Orders => "col-orders",
        })
    }
}

/// The 34 provinces as rows, sorted.
pub fn province_rows(provinces: &[pb::ProvinceSummary], sort: Sort, lang: Lang) -> Vec<Row> {
    let mut rows: Vec<Row> = provinces
        .iter()
        .map(|p| {
            Row::new(
                p.name.clone(),
                Some(format!("/provinces/{}", p.code)),
                province_figures(p),
                lang,
            )
        })
        .collect();
    let key = |r: &Row| match sort {
        Sort::Households => r.raw.households,
        Sort::Tonnes => r.raw.grams,
        Sort::Value => r.raw.value_vnd,
        Sort::Orders => r.raw.orders,
        Sort::Name => 0,
    };
    if sort == Sort::Name {
        rows.sort_by(|a, b| a.name.cmp(&b.name));
    } else {
        // Ties by name, so the order is stable from one load to the next.
        rows.sort_by(|a, b| key(b).cmp(&key(a)).then_with(|| a.name.cmp(&b.name)));
    }
    rows
}

/// The progress to the national target of households onboarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Households onboarded.
    pub onboarded: i64,
    /// The target.
    pub target: i64,
    /// "2.345.678 trên mục tiêu 5.000.000 hộ (46,91 %)".
    pub text: String,
    /// The same sentence with `{n}` and `{p}` where the live script puts newer figures, so
    /// the sentence stays in the reader's language when it refreshes.
    pub live_template: String,
}

/// Progress of `onboarded` against the programme's target.
pub fn progress(onboarded: i64, tr: &Tr) -> Progress {
    let lang = tr.lang();
    // Hundredths of a percent, in integers: exact, and never a float on the page.
    let hundredths =
        i64::try_from(i128::from(onboarded.max(0)) * 10_000 / i128::from(HOUSEHOLD_TARGET))
            .unwrap_or(i64::MAX);
    let text = tr.with(
        "progress-text",
        &[
            ("onboarded", format::integer(onboarded, lang)),
            ("target", format::integer(HOUSEHOLD_TARGET, lang)),
            ("percent", format::percent(hundredths, lang)),
        ],
    );
    let live_template = tr.with(
        "progress-text",
        &[
            ("onboarded", "{n}".to_string()),
            ("target", format::integer(HOUSEHOLD_TARGET, lang)),
            ("percent", "{p}".to_string()),
        ],
    );
    Progress {
        onboarded: onboarded.clamp(0, HOUSEHOLD_TARGET),
        target: HOUSEHOLD_TARGET,
        text,
        live_template,
    }
}

/// "Cập nhật lúc 14:05 01/12/2026", from the gateway's RFC 3339 `as_of`.
pub fn updated(as_of: &str, tr: &Tr) -> String {
    match format::parse_rfc3339(as_of) {
        Some(t) => tr.with("updated-at", &[("time", format::date_time(t, tr.lang()))]),
        None => tr.t("updated-never"),
    }
}

/// A province's rank (1 = most) by households onboarded and by value sold, among all.
pub fn ranks(code: &str, provinces: &[pb::ProvinceSummary]) -> Option<(usize, usize)> {
    let mine = provinces.iter().find(|p| p.code == code)?;
    let me = province_figures(mine);
    let above = |key: &dyn Fn(&Figures) -> i64| {
        provinces
            .iter()
            .filter(|p| key(&province_figures(p)) > key(&me))
            .count()
            + 1
    };
    Some((above(&|f| f.households), above(&|f| f.value_vnd)))
}

/// The province named by `code` (a 2025 code, or a pre-2025 one with the province it merged
/// into), as (code, name, region, merged).
pub fn find_province(code: &str) -> Option<(String, String, String, bool)> {
    use agriportal_platform::reference::ProvinceMatch;
    let found = Reference::get().resolve_province(code)?;
    let merged = matches!(found, ProvinceMatch::Merged(_));
    let p = found.province();
    Some((p.code.clone(), p.name.clone(), p.region.clone(), merged))
}
