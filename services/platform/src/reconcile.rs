//! What the marketplace service and the gateway must compute identically for reconciliation:
//! the hash of one rollup cell and the per-province digest of a partner's cells. Kept here,
//! the one crate both share, so the two sides cannot drift apart.

use std::collections::BTreeMap;

pub use agriportal_proto::marketplace::v1::{ProvinceDigest, RollupCell};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    // A separator after every field, so that ("ab", "c") and ("a", "bc") differ.
    (hash ^ 0xff).wrapping_mul(FNV_PRIME)
}

/// One rollup cell as both services select it (`day, province_code, category, status, grams,
/// value_vnd, orders, n`), on either backend.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CellRow {
    /// Day, `YYYY-MM-DD`.
    pub day: String,
    /// 2025 province code.
    pub province_code: String,
    /// Category code (sales; empty for households).
    pub category: String,
    /// Household status (households; 0 for sales).
    pub status: i64,
    /// Grams.
    pub grams: i64,
    /// Đồng.
    pub value_vnd: i64,
    /// Orders.
    pub orders: i64,
    /// Lines (sales) or households.
    pub n: i64,
}

/// The non-empty cells among `rows`.
pub fn cells_from_rows(rows: Vec<CellRow>) -> crate::Result<Vec<RollupCell>> {
    let mut cells = Vec::with_capacity(rows.len());
    for row in rows {
        let cell = RollupCell {
            day: row.day,
            province_code: row.province_code,
            category: row.category,
            status: i32::try_from(row.status).map_err(crate::Error::internal)?,
            quantity_grams: row.grams,
            value_vnd: row.value_vnd,
            orders: row.orders,
            count: row.n,
        };
        if !is_empty(&cell) {
            cells.push(cell);
        }
    }
    Ok(cells)
}

/// A cell with nothing in it. The gateway may keep such a row after corrections moved every
/// record away, while the marketplace's grouping never yields one: both sides skip them.
pub fn is_empty(cell: &RollupCell) -> bool {
    cell.quantity_grams == 0 && cell.value_vnd == 0 && cell.orders == 0 && cell.count == 0
}

/// 64-bit FNV-1a hash of a cell's key and figures.
pub fn cell_hash(cell: &RollupCell) -> u64 {
    let mut hash = FNV_OFFSET;
    hash = fnv(hash, cell.day.as_bytes());
    hash = fnv(hash, cell.province_code.as_bytes());
    hash = fnv(hash, cell.category.as_bytes());
    for figure in [
        i64::from(cell.status),
        cell.quantity_grams,
        cell.value_vnd,
        cell.orders,
        cell.count,
    ] {
        hash = fnv(hash, &figure.to_le_bytes());
    }
    hash
}

/// One digest per province over the non-empty `cells`, ordered by province code. The digest
/// is a wrapping sum of the cells' hashes, so the order the cells come in does not matter.
pub fn province_digests<'a>(
    cells: impl IntoIterator<Item = &'a RollupCell>,
) -> Vec<ProvinceDigest> {
    let mut by_province: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for cell in cells.into_iter().filter(|c| !is_empty(c)) {
        let entry = by_province.entry(cell.province_code.as_str()).or_default();
        entry.0 = entry.0.wrapping_add(cell_hash(cell));
        entry.1 += 1;
    }
    by_province
        .into_iter()
        .map(|(province, (digest, cells))| ProvinceDigest {
            province_code: province.to_string(),
            digest,
            cells,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(day: &str, province: &str, grams: i64) -> RollupCell {
        RollupCell {
            day: day.into(),
            province_code: province.into(),
            category: "rau".into(),
            quantity_grams: grams,
            value_vnd: grams * 10,
            orders: 1,
            count: 1,
            ..Default::default()
        }
    }

    #[test]
    fn digests_ignore_order_and_empty_cells_but_see_any_figure() {
        let a = vec![
            cell("2026-01-01", "01", 5),
            cell("2026-01-02", "01", 7),
            cell("2026-01-01", "79", 1),
        ];
        let mut b = a.clone();
        b.reverse();
        b.push(RollupCell {
            day: "2026-01-03".into(),
            province_code: "01".into(),
            ..Default::default()
        });
        assert_eq!(province_digests(&a), province_digests(&b));
        assert_eq!(province_digests(&a).len(), 2);
        let mut c = a.clone();
        c[1].orders = 2;
        assert_ne!(province_digests(&a)[0], province_digests(&c)[0]);
        assert_eq!(province_digests(&a)[1], province_digests(&c)[1]);
        // Moving figures between two cells of a province changes its digest too.
        let mut d = a.clone();
        d[0].quantity_grams = 7;
        d[1].quantity_grams = 5;
        assert_ne!(
            province_digests(&a)[0].digest,
            province_digests(&d)[0].digest
        );
    }

    #[test]
    fn field_boundaries_matter() {
        let mut x = cell("2026-01-01", "01", 1);
        let mut y = x.clone();
        x.category = "ab".into();
        x.province_code = "0".into();
        y.category = "b".into();
        y.province_code = "0a".into();
        assert_ne!(cell_hash(&x), cell_hash(&y));
    }
}
