//! Reference data of the plan, embedded in the binary from `services/platform/reference/`
//! (sources in that folder's README): the 34 provinces since 1 July 2025, the 63 older ones and
//! where each went, 3,321 communes, regions, product categories and partners.

use std::collections::HashMap;
use std::sync::OnceLock;

/// A province (tỉnh / thành phố) since 1 July 2025.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Province {
    /// Official 2-digit code.
    pub code: String,
    /// Official Vietnamese name.
    pub name: String,
    /// Macro region: `north`, `central` or `south`.
    pub region: String,
    /// Socio-economic subregion code (see `regions.csv`).
    pub subregion: String,
}

/// A province as it was before 1 July 2025 (63 of them), and the province it merged into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OldProvince {
    /// Its 2-digit code then (some are also codes since 2025, of another extent).
    pub code: String,
    /// Its official name then.
    pub name: String,
    /// Code of the province since 1 July 2025 it is part of.
    pub merged_into: String,
}

/// A commune-level unit (xã, phường, đặc khu) since 1 July 2025.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commune {
    /// Official 5-digit code.
    pub code: String,
    /// Vietnamese name.
    pub name: String,
    /// Code of the province it lies in.
    pub province_code: String,
}

/// A product category.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Category {
    /// Code used in records (`vegetables`).
    pub code: String,
    /// Vietnamese name.
    pub name_vi: String,
    /// English name.
    pub name_en: String,
}

/// A partner marketplace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Partner {
    /// Postmart (Vietnam Post).
    Postmart,
    /// Vỏ Sò (Viettel Post).
    Voso,
}

impl Partner {
    /// Both partners, in display order.
    pub const ALL: [Partner; 2] = [Partner::Postmart, Partner::Voso];

    /// The code used in URLs, tokens and tables.
    pub fn code(self) -> &'static str {
        match self {
            Partner::Postmart => "postmart",
            Partner::Voso => "voso",
        }
    }
    /// The display name.
    pub fn name(self) -> &'static str {
        match self {
            Partner::Postmart => "Postmart",
            Partner::Voso => "Vỏ Sò",
        }
    }
    /// Parses a partner code.
    pub fn from_code(code: &str) -> Option<Partner> {
        match code {
            "postmart" => Some(Partner::Postmart),
            "voso" => Some(Partner::Voso),
            _ => None,
        }
    }
    /// The protobuf enum value.
    pub fn to_proto(self) -> agriportal_proto::common::v1::Partner {
        match self {
            Partner::Postmart => agriportal_proto::common::v1::Partner::Postmart,
            Partner::Voso => agriportal_proto::common::v1::Partner::Voso,
        }
    }
    /// From the protobuf enum value; `None` for unspecified or unknown.
    pub fn from_proto(value: i32) -> Option<Partner> {
        use agriportal_proto::common::v1::Partner as P;
        match P::try_from(value).ok()? {
            P::Postmart => Some(Partner::Postmart),
            P::Voso => Some(Partner::Voso),
            P::Unspecified => None,
        }
    }
}

/// The macro regions, north to south.
pub const REGIONS: [&str; 3] = ["north", "central", "south"];

/// The plan's national target of households onboarded (Decision 1034/QĐ-BTTTT).
pub const HOUSEHOLD_TARGET: i64 = 5_000_000;

/// The plan's start date: records dated before it are refused.
pub const PLAN_START: time::Date = time::macros::date!(2021 - 07 - 21);

/// All reference data, parsed once.
#[derive(Debug)]
pub struct Reference {
    provinces: Vec<Province>,
    by_code: HashMap<String, usize>,
    old_to_new: HashMap<String, String>,
    old_provinces: Vec<OldProvince>,
    communes: HashMap<String, Commune>,
    categories: Vec<Category>,
}

/// How a province code given by a caller was understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProvinceMatch<'a> {
    /// A code since 1 July 2025.
    Current(&'a Province),
    /// A pre-2025 code, mapped to the province it merged into.
    Merged(&'a Province),
}

impl<'a> ProvinceMatch<'a> {
    /// The province since 2025.
    pub fn province(self) -> &'a Province {
        match self {
            ProvinceMatch::Current(p) | ProvinceMatch::Merged(p) => p,
        }
    }
}

impl Reference {
    /// The embedded reference data.
    pub fn get() -> &'static Reference {
        static REFERENCE: OnceLock<Reference> = OnceLock::new();
        REFERENCE.get_or_init(Reference::parse)
    }

    fn parse() -> Reference {
        let provinces: Vec<Province> = rows(include_str!("../reference/provinces.csv"))
            .map(|r| Province {
                code: r[0].clone(),
                name: r[1].clone(),
                region: r[2].clone(),
                subregion: r[3].clone(),
            })
            .collect();
        let by_code = provinces
            .iter()
            .enumerate()
            .map(|(i, p)| (p.code.clone(), i))
            .collect();
        let mut old_provinces: Vec<OldProvince> =
            rows(include_str!("../reference/provinces_before_2025.csv"))
                .map(|r| OldProvince {
                    code: r[0].clone(),
                    name: r[1].clone(),
                    merged_into: r[2].clone(),
                })
                .collect();
        old_provinces.sort_by(|a, b| a.code.cmp(&b.code));
        let old_to_new = old_provinces
            .iter()
            .map(|p| (p.code.clone(), p.merged_into.clone()))
            .collect();
        let communes = rows(include_str!("../reference/communes.csv"))
            .map(|r| {
                let c = Commune {
                    code: r[0].clone(),
                    name: r[1].clone(),
                    province_code: r[2].clone(),
                };
                (c.code.clone(), c)
            })
            .collect();
        let categories = rows(include_str!("../reference/categories.csv"))
            .map(|r| Category {
                code: r[0].clone(),
                name_vi: r[1].clone(),
                name_en: r[2].clone(),
            })
            .collect();
        Reference {
            provinces,
            by_code,
            old_to_new,
            old_provinces,
            communes,
            categories,
        }
    }

    /// The 34 provinces since 1 July 2025, in code order.
    pub fn provinces(&self) -> &[Province] {
        &self.provinces
    }

    /// A province by its 2025 code only.
    pub fn province(&self, code: &str) -> Option<&Province> {
        self.by_code.get(code).map(|&i| &self.provinces[i])
    }

    /// A province by a 2025 code, or by a pre-2025 code mapped to the province it merged into.
    pub fn resolve_province(&self, code: &str) -> Option<ProvinceMatch<'_>> {
        if let Some(p) = self.province(code) {
            return Some(ProvinceMatch::Current(p));
        }
        let new = self.old_to_new.get(code)?;
        self.province(new).map(ProvinceMatch::Merged)
    }

    /// The 63 provinces before 1 July 2025, in code order, each with the province it merged
    /// into.
    pub fn provinces_before_2025(&self) -> &[OldProvince] {
        &self.old_provinces
    }

    /// A commune by its 5-digit code.
    pub fn commune(&self, code: &str) -> Option<&Commune> {
        self.communes.get(code)
    }

    /// Communes of a province, in code order.
    pub fn communes_of(&self, province_code: &str) -> Vec<&Commune> {
        let mut list: Vec<&Commune> = self
            .communes
            .values()
            .filter(|c| c.province_code == province_code)
            .collect();
        list.sort_by(|a, b| a.code.cmp(&b.code));
        list
    }

    /// Number of communes.
    pub fn commune_count(&self) -> usize {
        self.communes.len()
    }

    /// Product categories.
    pub fn categories(&self) -> &[Category] {
        &self.categories
    }

    /// A category by code.
    pub fn category(&self, code: &str) -> Option<&Category> {
        self.categories.iter().find(|c| c.code == code)
    }
}

/// Data rows of an embedded CSV file (header skipped). Fields may be double-quoted; the files
/// are ours and well-formed, so a short row is padded rather than refused.
fn rows(text: &'static str) -> impl Iterator<Item = Vec<String>> {
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut fields = Vec::new();
            let mut field = String::new();
            let mut quoted = false;
            let mut chars = line.chars().peekable();
            while let Some(c) = chars.next() {
                match (c, quoted) {
                    ('"', true) if chars.peek() == Some(&'"') => {
                        field.push('"');
                        chars.next();
                    }
                    ('"', _) => quoted = !quoted,
                    (',', false) => fields.push(std::mem::take(&mut field)),
                    _ => field.push(c),
                }
            }
            fields.push(field);
            while fields.len() < 5 {
                fields.push(String::new());
            }
            fields
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_the_sources() {
        let r = Reference::get();
        assert_eq!(r.provinces().len(), 34);
        assert_eq!(r.old_to_new.len(), 63);
        assert_eq!(r.provinces_before_2025().len(), 63);
        let ha_giang = r.provinces_before_2025().iter().find(|p| p.code == "02");
        assert_eq!(
            ha_giang.map(|p| (p.name.as_str(), p.merged_into.as_str())),
            Some(("Tỉnh Hà Giang", "08"))
        );
        assert_eq!(r.commune_count(), 3321);
        assert_eq!(r.categories().len(), 11);
        assert_eq!(
            r.category("tea_coffee_cocoa").map(|c| c.name_vi.as_str()),
            Some("Chè, cà phê, ca cao")
        );
    }

    #[test]
    fn old_codes_map_to_their_new_province() {
        let r = Reference::get();
        // Hà Giang (02) merged into Tuyên Quang (08).
        assert_eq!(
            r.resolve_province("02").map(|m| m.province().code.as_str()),
            Some("08")
        );
        assert!(matches!(
            r.resolve_province("08"),
            Some(ProvinceMatch::Current(_))
        ));
        assert!(matches!(
            r.resolve_province("02"),
            Some(ProvinceMatch::Merged(_))
        ));
        assert!(r.resolve_province("99").is_none());
        for p in r.provinces() {
            assert!(
                REGIONS.contains(&p.region.as_str()),
                "{} has region {}",
                p.code,
                p.region
            );
        }
        for c in r.communes.values() {
            assert!(
                r.province(&c.province_code).is_some(),
                "commune {} in unknown province",
                c.code
            );
        }
    }
}
