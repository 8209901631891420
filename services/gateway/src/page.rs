//! The national dashboard page: plain HTML, Vietnamese first, no JavaScript, a few kilobytes,
//! refreshing itself, so it works on a cheap phone on a slow network.

use std::fmt::Write;

use crate::domain::{NationalView, ProvinceView};

/// Formats an integer the Vietnamese way, `1.234.567`.
pub fn group(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('.');
        }
        out.push(c);
    }
    out
}

/// Tonnes with one decimal, from grams, Vietnamese style (`26.000,5`).
fn tonnes(grams: i64) -> String {
    let tenths = grams / 100_000;
    format!("{},{}", group(tenths / 10), (tenths % 10).abs())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn region_name(code: &str) -> &'static str {
    match code {
        "north" => "Miền Bắc",
        "central" => "Miền Trung",
        "south" => "Miền Nam",
        _ => "Khác",
    }
}

/// Renders the page.
pub fn render(n: &NationalView, provinces: &[ProvinceView]) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let pct = n.households.progress_pct.unwrap_or(0.0);
    let _ = write!(
        h,
        r#"<!doctype html>
<html lang="vi"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="5">
<title>Tiến độ đưa hộ nông nghiệp lên sàn TMĐT</title>
<style>
body{{font-family:system-ui,sans-serif;margin:0;color:#0b0c0c;line-height:1.4}}
header{{background:#0b5e3c;color:#fff;padding:.75rem 1rem}} header p{{margin:0;font-size:.9rem}}
main{{padding:1rem;max-width:60rem;margin:auto}} h1{{font-size:1.35rem;margin:.2rem 0}} h2{{font-size:1.1rem;margin-top:1.5rem}}
.cards{{display:grid;grid-template-columns:repeat(auto-fit,minmax(12rem,1fr));gap:.75rem}}
.card{{border:2px solid #b1b4b6;padding:.75rem}} .big{{font-size:1.6rem;font-weight:700}}
progress{{width:100%;height:1rem}}
table{{border-collapse:collapse;width:100%;font-size:.9rem}} th,td{{border-bottom:1px solid #b1b4b6;padding:.3rem;text-align:right}}
th:first-child,td:first-child{{text-align:left}} small{{color:#505a5f}}
</style></head><body>
<header><p>Chương trình đưa hộ sản xuất nông nghiệp lên sàn thương mại điện tử (QĐ 1034/QĐ-BTTTT)</p>
<h1>Tiến độ toàn quốc</h1></header><main>
<p><small>Số liệu do sàn Postmart và Vỏ Sò gửi. Cập nhật lúc: {as_of}. Trang tự làm mới sau 5 giây.</small></p>
<section aria-labelledby="hh"><h2 id="hh">Hộ sản xuất có tài khoản trên sàn</h2>
<div class="cards"><div class="card"><div class="big">{onboarded}</div>hộ đã lên sàn (mục tiêu {target})
<progress max="100" value="{pct:.2}">{pct:.2}%</progress> {pct:.2}% mục tiêu</div>
<div class="card"><div class="big">{active}</div>tài khoản đang hoạt động</div>
<div class="card">Postmart: <b>{hh_pm}</b> hộ<br>Vỏ Sò: <b>{hh_vs}</b> hộ</div></div></section>
<section aria-labelledby="sales"><h2 id="sales">Sản lượng và giá trị tiêu thụ</h2>
<div class="cards"><div class="card"><div class="big">{t} tấn</div>nông sản đã bán</div>
<div class="card"><div class="big">{v} đ</div>giá trị</div>
<div class="card"><div class="big">{o}</div>đơn hàng</div></div>
<table><caption>Theo sàn</caption><thead><tr><th scope="col">Sàn</th><th scope="col">Tấn</th><th scope="col">Giá trị (đ)</th><th scope="col">Đơn hàng</th></tr></thead><tbody>
"#,
        as_of = n
            .as_of
            .as_deref()
            .map(escape)
            .unwrap_or_else(|| "chưa có số liệu".into()),
        onboarded = group(n.households.onboarded),
        target = group(n.households.target.unwrap_or(0)),
        active = group(n.households.active),
        hh_pm = group(
            n.households
                .by_partner
                .get("postmart")
                .copied()
                .unwrap_or(0)
        ),
        hh_vs = group(n.households.by_partner.get("voso").copied().unwrap_or(0)),
        t = tonnes(n.sales.total.grams),
        v = group(n.sales.total.value_vnd),
        o = group(n.sales.total.orders),
    );
    for (code, name) in [("postmart", "Postmart"), ("voso", "Vỏ Sò")] {
        let s = n.sales.by_partner.get(code).copied().unwrap_or_default();
        let _ = writeln!(
            h,
            "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            tonnes(s.grams),
            group(s.value_vnd),
            group(s.orders)
        );
    }
    h.push_str("</tbody></table></section>\n<section aria-labelledby=\"rg\"><h2 id=\"rg\">Theo miền</h2><table><thead><tr><th scope=\"col\">Miền</th><th scope=\"col\">Hộ lên sàn</th><th scope=\"col\">Tấn</th><th scope=\"col\">Giá trị (đ)</th></tr></thead><tbody>\n");
    for r in &n.by_region {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            region_name(r.region),
            group(r.households_onboarded),
            tonnes(r.grams),
            group(r.value_vnd)
        );
    }
    h.push_str("</tbody></table></section>\n<section aria-labelledby=\"pv\"><h2 id=\"pv\">Theo tỉnh, thành phố</h2><table><thead><tr><th scope=\"col\">Tỉnh/thành</th><th scope=\"col\">Hộ lên sàn</th><th scope=\"col\">Đang hoạt động</th><th scope=\"col\">Tấn</th><th scope=\"col\">Giá trị (đ)</th></tr></thead><tbody>\n");
    for p in provinces {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&p.name),
            group(p.households.onboarded),
            group(p.households.active),
            tonnes(p.sales.total.grams),
            group(p.sales.total.value_vnd)
        );
    }
    h.push_str("</tbody></table></section>\n<p><small>Dữ liệu mở: <a href=\"/api/v1/national\">/api/v1/national</a>, <a href=\"/api/v1/provinces\">/api/v1/provinces</a>.</small></p></main></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_the_vietnamese_way() {
        assert_eq!(group(0), "0");
        assert_eq!(group(1234567), "1.234.567");
        assert_eq!(group(-1000), "-1.000");
        assert_eq!(tonnes(26_000_500_000), "26.000,5");
    }

    #[test]
    fn page_shows_the_figures_and_escapes_names() {
        let mut n = NationalView::default();
        n.households.onboarded = 3_100_000;
        let p = ProvinceView {
            name: "<b>".into(),
            ..ProvinceView::default()
        };
        let html = render(&n, &[p]);
        assert!(html.contains("3.100.000"));
        assert!(html.contains("&lt;b&gt;"));
        assert!(html.contains("lang=\"vi\""));
    }
}
