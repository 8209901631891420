//! The web's routes and what every response gets: the reader's language (`?lang=`, then the
//! `ap_lang` cookie, then `Accept-Language`, then Vietnamese), the signed-in official if any,
//! security headers (a Content-Security-Policy without inline scripts, `frame-ancestors 'none'`
//! everywhere but the embeddable widget, `nosniff`, a referrer policy, HSTS behind TLS), and for
//! HTML an `ETag` with `If-None-Match` and a short cache.

use std::sync::Arc;
use std::time::Duration;

use agriportal_platform::auth::Authenticator;
use askama::Template;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::assets::{self, assets};
use crate::backend::Backend;
use crate::communes;
use crate::config::WebConfig;
use crate::format::Lang;
use crate::i18n::Tr;
use crate::pages::{self, Chrome};
use crate::reporting;
use crate::session::{self, Found, Session, Sessions, LANG_COOKIE, SESSION_COOKIE};

/// What the handlers share.
pub struct Web {
    /// The gateway.
    pub backend: Backend,
    /// Officials' sessions.
    pub sessions: Sessions,
    /// Token verification (sign-in) and revocation.
    pub auth: Arc<Authenticator>,
    /// Settings.
    pub config: WebConfig,
}

impl Web {
    /// Whether cookies are `Secure` and HSTS is sent.
    pub fn secure(&self) -> bool {
        self.config.web_secure
    }

    /// The portal's public address for links other sites keep (embed snippets): the setting,
    /// else the address this request came to.
    pub fn public_base(&self, headers: &HeaderMap) -> String {
        if let Some(url) = &self.config.web_public_url {
            return url.trim_end_matches('/').to_string();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .filter(|h| {
                h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
            })
            .unwrap_or("localhost");
        let scheme = if self.secure() { "https" } else { "http" };
        format!("{scheme}://{host}")
    }
}

/// One request's reader: language, session, and what the response must set.
#[derive(Clone, Debug)]
pub struct Visit {
    /// The reader's language.
    pub lang: Lang,
    /// Whether `?lang=` chose it now (the response remembers it in a cookie).
    pub lang_chosen: bool,
    /// The signed-in official's session.
    pub session: Option<Session>,
    /// A session cookie that no longer opens a session (cleared, and the page says why).
    pub expired: bool,
    /// The request's `Cookie` header.
    pub cookies: String,
    /// Path and query, for the language switch.
    pub path: String,
    /// The query without `lang`.
    pub query: String,
    /// Whether the request's `Origin` (when sent) is this site: state-changing forms require it.
    pub same_origin: bool,
    /// A notice asked for by the previous page (signed out).
    pub signed_out: bool,
}

impl Visit {
    /// The reader's messages.
    pub fn tr(&self) -> Tr {
        Tr::new(self.lang)
    }

    /// Cookie `name` of the request.
    pub fn cookie(&self, name: &str) -> Option<String> {
        session::cookie(&self.cookies, name).map(str::to_string)
    }

    /// The layout of a page titled `title`, `current` in the navigation.
    pub fn chrome(&self, title: &str, current: &'static str, live: bool) -> Chrome {
        let tr = self.tr();
        let other = match self.lang {
            Lang::Vi => Lang::En,
            Lang::En => Lang::Vi,
        };
        let sep = if self.query.is_empty() { "" } else { "&" };
        let notice = if self.expired {
            Some(tr.t("session-expired"))
        } else if self.signed_out {
            Some(tr.t("signed-out"))
        } else {
            None
        };
        let all = assets();
        Chrome {
            lang_code: self.lang.code(),
            other_lang_code: other.code(),
            other_lang_href: format!("{}?{}{sep}lang={}", self.path, self.query, other.code()),
            title: title.to_string(),
            css: all.css.path.clone(),
            icon: all.icon.path.clone(),
            js: all.js.path.clone(),
            current,
            principal: self.session.as_ref().map(|s| s.principal.clone()),
            notice,
            live,
            tr,
        }
    }
}

/// Works out the reader (language, session) before the handler, and sets the language cookie
/// or clears a dead session cookie after it.
pub async fn visit(State(web): State<Arc<Web>>, mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    let cookies = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let query_string = request.uri().query().unwrap_or_default().to_string();
    let mut asked = None;
    let mut signed_out = false;
    let rest: Vec<&str> = query_string
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| match pair.split_once('=') {
            Some(("lang", v)) => {
                asked = Lang::from_code(v);
                false
            }
            Some(("signed_out", _)) => {
                signed_out = true;
                false
            }
            _ => true,
        })
        .collect();
    let lang = asked
        .or_else(|| session::cookie(&cookies, LANG_COOKIE).and_then(Lang::from_code))
        .or_else(|| {
            headers
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok())
                .and_then(Lang::from_accept_language)
        })
        .unwrap_or(Lang::Vi);
    let same_origin = match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(origin) => {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            origin
                .split_once("://")
                .is_some_and(|(_, authority)| authority == host)
        }
    };
    let (session, expired) = match session::cookie(&cookies, SESSION_COOKIE) {
        None => (None, false),
        Some(id) => match web.sessions.find(id, &web.auth).await {
            Ok(Found::Live(s)) => (Some(s), false),
            Ok(Found::Expired) => (None, true),
            Err(err) => {
                // The session store is away: serve the page as to a reader who is not signed
                // in, rather than fail every page.
                tracing::warn!(error = %err, "cannot read the session store");
                (None, false)
            }
        },
    };
    let visit = Visit {
        lang,
        lang_chosen: asked.is_some(),
        session,
        expired,
        cookies,
        path: request.uri().path().to_string(),
        query: rest.join("&"),
        same_origin,
        signed_out,
    };
    request.extensions_mut().insert(visit.clone());
    let mut response = next.run(request).await;
    let secure = web.secure();
    let mut set = Vec::new();
    if visit.lang_chosen {
        set.push(session::set_cookie(
            LANG_COOKIE,
            visit.lang.code(),
            Some(Duration::from_secs(365 * 86_400)),
            secure,
        ));
    }
    if visit.expired {
        set.push(session::set_cookie(
            SESSION_COOKIE,
            "",
            Some(Duration::ZERO),
            secure,
        ));
    }
    append_cookies(&mut response, set);
    response
}

/// Sets each of `cookies` (`Set-Cookie` values) on `response`.
pub fn append_cookies(response: &mut Response, cookies: impl IntoIterator<Item = String>) {
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
}

/// The Content-Security-Policy of every page: only this site's own script, styles and images,
/// no inline script, no plugins; only the widget may be framed, by anyone.
fn csp(frameable: bool) -> &'static str {
    if frameable {
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; \
         base-uri 'none'; form-action 'self'; frame-ancestors *"
    } else {
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    }
}

/// Security headers on every response.
pub async fn security_headers(
    State(web): State<Arc<Web>>,
    request: Request,
    next: Next,
) -> Response {
    let frameable = request.uri().path().starts_with("/embed/province/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp(frameable)),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    if !frameable {
        // For browsers older than frame-ancestors.
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    if web.secure() {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    response
}

/// Renders `page` as HTML with `status`: an `ETag` of the body, `304 Not Modified` when the
/// reader has it already, a short public cache for anonymous pages, none for signed-in ones
/// (they carry the reader's own forms).
pub fn html<T: Template>(
    visit: &Visit,
    request: &HeaderMap,
    page: &T,
    status: StatusCode,
) -> Response {
    let body = match page.render() {
        Ok(body) => body,
        Err(err) => {
            tracing::error!(error = %err, "a template failed to render");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "Đã có lỗi / Something went wrong",
            )
                .into_response();
        }
    };
    let etag = agriportal_platform::http::entity_tag(body.as_bytes());
    let private = visit.session.is_some() || body.contains("name=\"csrf\"");
    let cache = if private {
        "private, no-store"
    } else {
        "public, max-age=5"
    };
    let fresh =
        status == StatusCode::OK && agriportal_platform::http::if_none_match(request, &etag);
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::VARY,
        HeaderValue::from_static("Cookie, Accept-Language"),
    );
    response
}

/// A CSV download (UTF-8 with BOM, CRLF, formulas neutralised).
pub fn csv_response(headers: &[String], rows: &[Vec<String>], filename: &str) -> Response {
    let heads: Vec<&str> = headers.iter().map(String::as_str).collect();
    match agriportal_platform::csv::to_csv(&heads, rows) {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    agriportal_platform::csv::content_disposition(filename),
                ),
                (header::CACHE_CONTROL, "public, max-age=5".to_string()),
            ],
            body,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "a CSV could not be written");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// A CSV download of what a signed-in official may read: as [`csv_response`], but never
/// kept by a cache.
pub fn private_csv(headers: &[String], rows: &[Vec<String>], filename: &str) -> Response {
    let mut response = csv_response(headers, rows, filename);
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    response
}

/// A method a route does not take, as an HTML page (forms are POST, pages GET).
async fn method_not_allowed(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    if response.status() == StatusCode::METHOD_NOT_ALLOWED && method != Method::HEAD {
        let (parts, _) = response.into_parts();
        let mut response = Response::from_parts(parts, axum::body::Body::from("405"));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return response;
    }
    response
}

/// The web's routes (the kit merges them at `/`: it answers whatever the other services do
/// not, and so owns the fallback).
pub fn router(web: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(pages::home))
        .route("/dashboard", get(pages::dashboard))
        .route("/dashboard/{file}", get(pages::dashboard_csv))
        .route("/provinces/{code}", get(pages::province))
        .route(
            "/provinces/{code}/partners.csv",
            get(pages::province_partners_csv),
        )
        .route(
            "/provinces/{code}/series.csv",
            get(pages::province_series_csv),
        )
        .route("/embed", get(pages::embed))
        .route("/embed/snippets.csv", get(pages::embed_snippets_csv))
        .route("/embed/province/{code}", get(pages::embed_province))
        .route("/indicators", get(reporting::indicators))
        .route("/indicators.csv", get(reporting::indicators_csv))
        .route("/indicators/{code}", get(reporting::indicator))
        .route("/indicators/{code}/communes", get(communes::page))
        .route("/indicators/{code}/communes.csv", get(communes::csv))
        .route("/indicators/{code}/{file}", get(reporting::indicator_csv))
        .route("/reports", get(reporting::reports))
        .route("/reports.csv", get(reporting::reports_csv))
        .route(
            "/reports/{province}/{period}",
            get(reporting::report).post(reporting::save_report),
        )
        .route(
            "/reports/{province}/{period}/import",
            axum::routing::post(reporting::import_report),
        )
        .route(
            "/reports/{province}/{period}/export.csv",
            get(reporting::export_report),
        )
        .route(
            "/reports/{province}/{period}/history.csv",
            get(reporting::history_csv),
        )
        .route("/review", get(reporting::review).post(reporting::decide))
        .route("/chase", get(reporting::chase))
        .route("/chase.csv", get(reporting::chase_csv))
        .route("/signin", get(pages::signin_form).post(pages::signin))
        .route("/signout", axum::routing::post(pages::signout))
        .route("/account", get(pages::account))
        .route("/static/{file}", get(assets::serve))
        .fallback(pages::fallback)
        .layer(axum::middleware::from_fn_with_state(web.clone(), visit))
        .layer(axum::middleware::from_fn_with_state(
            web.clone(),
            security_headers,
        ))
        .layer(axum::middleware::from_fn(method_not_allowed))
        .with_state(web)
}
