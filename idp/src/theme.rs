//! Themes: loading, template rendering, message catalogs and locale negotiation.
//!
//! A theme is a folder with three optional parts:
//!
//! ```text
//! <name>/templates/*.html     minijinja templates (auto-escaped as HTML)
//! <name>/static/*             style sheets, images, fonts, served under /assets/<name>/
//! <name>/messages/en.toml     message catalogs: flat dotted ids -> text
//! <name>/messages/fr.toml
//! <name>/emails/*             emails: <message>.subject.txt, <message>.txt, <message>.html
//! <name>/sms/*.txt            text messages: <message>.txt
//! ```
//!
//! Email and SMS templates are named by their folder: `emails/login_code.html`,
//! `sms/login_code.txt` (see `crate::notifier`).
//!
//! The `default` theme (`themes/default/` in the repository) is compiled into the
//! binary, so the server runs from any folder. Every other theme comes from the
//! configured themes folder, and every file it lacks falls back to the default
//! theme's: a theme holding only `static/style.css` is complete. Catalogs fall back
//! per message id, so a theme's `fr.toml` may override a single message. A folder
//! named `default` in the themes folder overrides the embedded default theme's files
//! (and so the fallback of every other theme).
//!
//! Everything is read, parsed and compiled once, in [`Themes::load`]; rendering only
//! looks things up. A syntax error in a template or catalog is a [`ThemeError`]
//! naming the file, so a bad theme stops the start-up instead of a page.
//!
//! Inside templates:
//! - `t("message.id")` is the message in the page's locale, falling back to English,
//!   then to the id itself (logged as a warning); `t("id", name="x")` fills `{name}`.
//! - `asset("style.css")` is the URL of a static file of the theme being rendered:
//!   `/assets/<theme>/style.css`.
//! - `lang` (`"en"`/`"fr"`) and `theme` (the theme actually rendered) are always set,
//!   on top of the context the handler passes.
//! - `own_brand` is true in a theme whose own catalogs name its product (`brand.name`):
//!   the default layouts then show that name instead of the client's. A `default`
//!   folder's `brand.name` stays a fallback for pages without a client name.
//!
//! The default layout links `style.css` and then `theme.css`, which the default theme
//! ships empty: a theme changes its colours by overriding the variables of `style.css`
//! in its own `theme.css`, without copying the whole style sheet.
//!
//! Undefined variables may be tested (`{% if error %}`) but not printed: a template
//! printing a key its handler does not pass fails to render instead of showing a blank.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use minijinja::value::Kwargs;
use minijinja::{AutoEscape, Environment, State, UndefinedBehavior, Value, context};

/// Name of the theme compiled into the binary, and the fallback of every other theme.
pub(crate) const DEFAULT_THEME: &str = "default";

/// The message id of a product name; a theme defining it names its pages (`own_brand`).
const BRAND_NAME_ID: &str = "brand.name";

/// Static files of the embedded default theme: every file of
/// `themes/default/static/`, listed by `build.rs`.
const EMBEDDED_ASSETS: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// Email and SMS templates of the embedded default theme, by template name:
/// every file of `themes/default/emails/` and `themes/default/sms/`, listed
/// by `build.rs`.
const EMBEDDED_MESSAGE_TEMPLATES: &[(&str, &str)] =
    include!(concat!(env!("OUT_DIR"), "/message_templates.rs"));

/// The theme folders holding email and SMS templates; a template's name is
/// `<folder>/<path in the folder>`.
const MESSAGE_TEMPLATE_FOLDERS: [&str; 2] = ["emails", "sms"];

/// Message catalogs of the embedded default theme: locale, name for errors, text.
const EMBEDDED_CATALOGS: [(Locale, &str, &str); 2] = [
    (
        Locale::En,
        "themes/default/messages/en.toml (embedded)",
        include_str!("../../themes/default/messages/en.toml"),
    ),
    (
        Locale::Fr,
        "themes/default/messages/fr.toml (embedded)",
        include_str!("../../themes/default/messages/fr.toml"),
    ),
];

/// A language the pages are translated into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Locale {
    En,
    Fr,
}

impl Locale {
    const ALL: [Locale; 2] = [Locale::En, Locale::Fr];

    /// The BCP 47 primary language subtag: `"en"` or `"fr"`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Locale::En => "en",
            Locale::Fr => "fr",
        }
    }

    fn index(self) -> usize {
        match self {
            Locale::En => 0,
            Locale::Fr => 1,
        }
    }

    /// The supported locale of a language tag, by its primary subtag: `fr-CA` is French.
    fn from_tag(tag: &str) -> Option<Locale> {
        let primary = tag.trim().split(['-', '_']).next()?;
        Locale::ALL
            .into_iter()
            .find(|locale| primary.eq_ignore_ascii_case(locale.as_str()))
    }
}

/// Chooses the locale of a page.
///
/// `ui_locales` is the OpenID Connect parameter (Core 1.0 §3.1.2.1): a space-separated
/// list of BCP 47 tags in order of preference; its first supported tag wins. Otherwise
/// the `Accept-Language` header decides (RFC 9110 §12.5.4): the supported locale with
/// the highest q-value, the earlier one on a tie, `*` standing for any locale not
/// listed and `q=0` meaning "not this one". Otherwise English.
pub(crate) fn negotiate_locale(ui_locales: Option<&str>, accept_language: Option<&str>) -> Locale {
    ui_locales
        .and_then(|list| list.split_whitespace().find_map(Locale::from_tag))
        .or_else(|| accept_language.and_then(locale_from_accept_language))
        .unwrap_or(Locale::En)
}

/// The preferred supported locale of an `Accept-Language` header, if it names one.
fn locale_from_accept_language(header: &str) -> Option<Locale> {
    // Per locale (and for `*`): the highest q-value given and the position it was given at.
    let mut explicit: [Option<(u16, usize)>; 2] = [None, None];
    let mut wildcard: Option<(u16, usize)> = None;
    for (position, item) in header.split(',').enumerate() {
        let mut parts = item.split(';');
        let tag = parts.next().unwrap_or_default().trim();
        let mut quality = Some(1000);
        for parameter in parts {
            let parameter = parameter.trim();
            if let Some(value) = parameter
                .strip_prefix("q=")
                .or_else(|| parameter.strip_prefix("Q="))
            {
                quality = parse_qvalue(value.trim());
            }
        }
        let Some(quality) = quality else { continue };
        let slot = if tag == "*" {
            &mut wildcard
        } else if let Some(locale) = Locale::from_tag(tag) {
            &mut explicit[locale.index()]
        } else {
            continue;
        };
        if slot.is_none_or(|(best, _)| quality > best) {
            *slot = Some((quality, position));
        }
    }
    Locale::ALL
        .into_iter()
        .filter_map(|locale| {
            let (quality, position) = explicit[locale.index()].or(wildcard)?;
            (quality > 0).then_some((quality, position, locale))
        })
        .min_by_key(|&(quality, position, _)| (std::cmp::Reverse(quality), position))
        .map(|(_, _, locale)| locale)
}

/// An RFC 9110 qvalue (`0`, `0.5`, `1.000`) in thousandths; `None` if malformed.
fn parse_qvalue(value: &str) -> Option<u16> {
    let (integer, fraction) = value.split_once('.').unwrap_or((value, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match integer {
        "0" => format!("{fraction:0<3}").parse().ok(),
        "1" if fraction.bytes().all(|b| b == b'0') => Some(1000),
        _ => None,
    }
}

/// Why the themes could not be loaded or a page rendered.
///
/// The messages carry the underlying error's text (and the file it is about), so
/// logging the error with `%` is enough.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ThemeError {
    #[error("cannot read {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "theme folder {}: a theme name is 1 to 64 characters among a-z, 0-9, '-' and '_', starting with a letter or digit",
        path.display()
    )]
    InvalidThemeName { path: PathBuf },
    #[error("template {}: {error}", path.display())]
    Template {
        path: PathBuf,
        error: minijinja::Error,
    },
    #[error("message catalog {}: {error}", path.display())]
    CatalogSyntax {
        path: PathBuf,
        error: Box<toml::de::Error>,
    },
    #[error("message catalog {}: the value of `{key}` must be a string", path.display())]
    CatalogValue { path: PathBuf, key: String },
    #[error("unknown theme `{0}`")]
    UnknownTheme(String),
    #[error("theme `{theme}` has no template `{template}`")]
    MissingTemplate { theme: String, template: String },
    #[error("cannot render template `{template}` of theme `{theme}`: {error}")]
    Render {
        theme: String,
        template: String,
        error: minijinja::Error,
    },
}

/// Every loaded theme, ready to render. Immutable once loaded: share it behind an `Arc`.
pub(crate) struct Themes {
    default: Theme,
    others: HashMap<String, Theme>,
}

impl std::fmt::Debug for Themes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.others.keys().map(String::as_str).collect();
        names.push(DEFAULT_THEME);
        names.sort_unstable();
        f.debug_struct("Themes").field("names", &names).finish()
    }
}

/// One theme with its fallbacks already applied: a complete set of templates,
/// static files and messages.
struct Theme {
    env: Environment<'static>,
    assets: HashMap<String, Asset>,
}

/// The content of a static file.
#[derive(Clone)]
enum Asset {
    Embedded(&'static [u8]),
    Loaded(Arc<[u8]>),
}

/// Message id -> text, per locale.
#[derive(Clone, Default)]
struct Catalogs {
    by_locale: [HashMap<String, String>; 2],
}

/// The files one theme folder provides, before fallback.
#[derive(Default)]
struct ThemeFiles {
    /// Template name (path under `templates/`, with `/`), file path, source.
    templates: Vec<(String, PathBuf, String)>,
    assets: Vec<(String, Arc<[u8]>)>,
    catalogs: Catalogs,
}

impl Themes {
    /// Loads the embedded default theme and, if `themes_dir` is given, every theme folder in it.
    ///
    /// Each subfolder of `themes_dir` is a theme named after it (hidden folders and plain
    /// files are ignored); `default` overrides the embedded default theme.
    pub(crate) fn load(themes_dir: Option<&Path>) -> Result<Themes, ThemeError> {
        let mut embedded = Catalogs::default();
        for (locale, name, text) in EMBEDDED_CATALOGS {
            embedded.by_locale[locale.index()] = parse_catalog(Path::new(name), text)?;
        }
        let mut folders = match themes_dir {
            Some(dir) => read_themes_dir(dir)?,
            None => BTreeMap::new(),
        };
        let default_override = folders.remove(DEFAULT_THEME);
        let default_layers: Vec<&ThemeFiles> = default_override.iter().collect();
        let default = build_theme(DEFAULT_THEME, &embedded, &default_layers, false)?;
        let mut others = HashMap::with_capacity(folders.len());
        for (name, files) in &folders {
            let mut layers = default_layers.clone();
            layers.push(files);
            let own_brand = files
                .catalogs
                .by_locale
                .iter()
                .any(|messages| messages.contains_key(BRAND_NAME_ID));
            others.insert(
                name.clone(),
                build_theme(name, &embedded, &layers, own_brand)?,
            );
        }
        Ok(Themes { default, others })
    }

    /// Whether a theme of that name was loaded (`default` always is).
    pub(crate) fn has_theme(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Checks that a theme exists and has every named template (`"password.html"`),
    /// its own or inherited from the default theme. For start-up checks of client config.
    pub(crate) fn check_templates(&self, theme: &str, names: &[&str]) -> Result<(), ThemeError> {
        let found = self
            .get(theme)
            .ok_or_else(|| ThemeError::UnknownTheme(theme.to_owned()))?;
        for name in names {
            if found.env.get_template(name).is_err() {
                return Err(ThemeError::MissingTemplate {
                    theme: theme.to_owned(),
                    template: (*name).to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Renders a template of a theme in a locale; an unknown theme renders the default one.
    ///
    /// `ctx` is the template's context (a map, usually built with `minijinja::context!`);
    /// `lang` and `theme` are added to it and win over keys of the same name.
    pub(crate) fn render(
        &self,
        theme: &str,
        template: &str,
        locale: Locale,
        ctx: Value,
    ) -> Result<String, ThemeError> {
        let (name, found) = match self.others.get_key_value(theme) {
            Some((name, found)) => (name.as_str(), found),
            None => {
                if theme != DEFAULT_THEME {
                    tracing::debug!(theme, "unknown theme, rendering the default theme");
                }
                (DEFAULT_THEME, &self.default)
            }
        };
        let render_error = |error| ThemeError::Render {
            theme: name.to_owned(),
            template: template.to_owned(),
            error,
        };
        found
            .env
            .get_template(template)
            .map_err(render_error)?
            .render(context! { lang => locale.as_str(), theme => name, ..ctx })
            .map_err(render_error)
    }

    /// A static file of a theme, with its content type, for `/assets/<theme>/<path>`.
    ///
    /// `None` for an unknown theme or file, and for any path that is not a plain
    /// relative one (`..`, `.` or empty segments, hidden files, absolute paths,
    /// backslashes, colons).
    pub(crate) fn asset(
        &self,
        theme: &str,
        path: &str,
    ) -> Option<(&'static str, Cow<'static, [u8]>)> {
        if !is_plain_relative_path(path) {
            return None;
        }
        let content = match self.get(theme)?.assets.get(path)? {
            Asset::Embedded(bytes) => Cow::Borrowed(*bytes),
            Asset::Loaded(bytes) => Cow::Owned(bytes.to_vec()),
        };
        Some((content_type(path), content))
    }

    fn get(&self, name: &str) -> Option<&Theme> {
        if name == DEFAULT_THEME {
            Some(&self.default)
        } else {
            self.others.get(name)
        }
    }
}

/// Assembles a theme: the embedded default theme, then each layer's files over it.
/// `own_brand`: the theme's own catalogs name its product (see the module docs).
fn build_theme(
    name: &str,
    embedded_catalogs: &Catalogs,
    layers: &[&ThemeFiles],
    own_brand: bool,
) -> Result<Theme, ThemeError> {
    let mut catalogs = embedded_catalogs.clone();
    let mut assets: HashMap<String, Asset> = EMBEDDED_ASSETS
        .iter()
        .map(|&(path, bytes)| (path.to_owned(), Asset::Embedded(bytes)))
        .collect();
    for layer in layers {
        for (merged, own) in catalogs.by_locale.iter_mut().zip(&layer.catalogs.by_locale) {
            merged.extend(own.iter().map(|(id, text)| (id.clone(), text.clone())));
        }
        for (path, bytes) in &layer.assets {
            assets.insert(path.clone(), Asset::Loaded(bytes.clone()));
        }
    }

    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_auto_escape_callback(|template| {
        if template.ends_with(".html") || template.ends_with(".htm") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env.set_formatter(|out, state, value| {
        if *state.auto_escape() == AutoEscape::Html && !value.is_safe() {
            write_html_escaped(out, &value.to_string()).map_err(minijinja::Error::from)
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    env.add_global("own_brand", own_brand);
    let theme_name = name.to_owned();
    env.add_function("asset", move |path: &str| {
        format!("/assets/{theme_name}/{path}")
    });
    let catalogs = Arc::new(catalogs);
    env.add_function(
        "t",
        move |state: &State, id: &str, kwargs: Kwargs| -> Result<String, minijinja::Error> {
            let locale = state
                .lookup("lang")
                .and_then(|lang| lang.as_str().and_then(Locale::from_tag))
                .unwrap_or(Locale::En);
            catalogs.translate(locale, id, &kwargs)
        },
    );
    minijinja_embed::load_templates!(&mut env);
    for (template, source) in EMBEDDED_MESSAGE_TEMPLATES {
        env.add_template(template, source)
            .map_err(|error| ThemeError::Template {
                path: PathBuf::from(format!("themes/default/{template} (embedded)")),
                error,
            })?;
    }
    for layer in layers {
        for (template, path, source) in &layer.templates {
            env.add_template_owned(template.clone(), source.clone())
                .map_err(|error| ThemeError::Template {
                    path: path.clone(),
                    error,
                })?;
        }
    }
    Ok(Theme { env, assets })
}

/// Escapes `&`, `<`, `>`, `"` and `'`: enough for text and quoted attributes.
///
/// minijinja's own HTML escaping also turns `/` into `&#x2f;`, which is harmless to
/// browsers but makes every URL in the pages unreadable to people and simple tests.
fn write_html_escaped(out: &mut minijinja::Output, text: &str) -> std::fmt::Result {
    let mut rest = text;
    while let Some(index) = rest.find(['&', '<', '>', '"', '\'']) {
        out.write_str(&rest[..index])?;
        out.write_str(match rest.as_bytes()[index] {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            _ => "&#39;",
        })?;
        rest = &rest[index + 1..];
    }
    out.write_str(rest)
}

impl Catalogs {
    /// The message in `locale`, else in English.
    fn message(&self, locale: Locale, id: &str) -> Option<&str> {
        self.by_locale[locale.index()]
            .get(id)
            .or_else(|| self.by_locale[Locale::En.index()].get(id))
            .map(String::as_str)
    }

    /// The message with its `{name}` placeholders filled from the keyword arguments;
    /// a placeholder without an argument stays as it is. A missing id gives the id.
    fn translate(
        &self,
        locale: Locale,
        id: &str,
        kwargs: &Kwargs,
    ) -> Result<String, minijinja::Error> {
        let Some(text) = self.message(locale, id) else {
            tracing::warn!(message_id = id, "no message with this id in any catalog");
            return Ok(id.to_owned());
        };
        let mut filled = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            filled.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            match after.find('}') {
                Some(close) if kwargs.has(&after[..close]) => {
                    let value: Value = kwargs.get(&after[..close])?;
                    filled.push_str(&value.to_string());
                    rest = &after[close + 1..];
                }
                _ => {
                    filled.push('{');
                    rest = after;
                }
            }
        }
        filled.push_str(rest);
        Ok(filled)
    }
}

/// Parses a catalog: TOML whose dotted keys (or tables) flatten to message ids.
fn parse_catalog(path: &Path, text: &str) -> Result<HashMap<String, String>, ThemeError> {
    let table: toml::Table = text.parse().map_err(|error| ThemeError::CatalogSyntax {
        path: path.to_owned(),
        error: Box::new(error),
    })?;
    let mut messages = HashMap::new();
    flatten_catalog(path, "", &table, &mut messages)?;
    Ok(messages)
}

fn flatten_catalog(
    path: &Path,
    prefix: &str,
    table: &toml::Table,
    messages: &mut HashMap<String, String>,
) -> Result<(), ThemeError> {
    for (key, value) in table {
        let id = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::String(text) => {
                messages.insert(id, text.clone());
            }
            toml::Value::Table(nested) => flatten_catalog(path, &id, nested, messages)?,
            _ => {
                return Err(ThemeError::CatalogValue {
                    path: path.to_owned(),
                    key: id,
                });
            }
        }
    }
    Ok(())
}

/// Reads every theme folder of the themes folder, by name.
fn read_themes_dir(dir: &Path) -> Result<BTreeMap<String, ThemeFiles>, ThemeError> {
    let mut themes = BTreeMap::new();
    for (name, path) in list_dir(dir)? {
        if name.starts_with('.') || !path.is_dir() {
            continue;
        }
        if !is_valid_theme_name(&name) {
            return Err(ThemeError::InvalidThemeName { path });
        }
        themes.insert(name, read_theme_dir(&path)?);
    }
    Ok(themes)
}

fn read_theme_dir(dir: &Path) -> Result<ThemeFiles, ThemeError> {
    let mut files = ThemeFiles::default();
    for (name, path) in list_files(&dir.join("templates"))? {
        let source = std::fs::read_to_string(&path).map_err(|error| ThemeError::Io {
            path: path.clone(),
            error,
        })?;
        files.templates.push((name, path, source));
    }
    for folder in MESSAGE_TEMPLATE_FOLDERS {
        for (name, path) in list_files(&dir.join(folder))? {
            let source = std::fs::read_to_string(&path).map_err(|error| ThemeError::Io {
                path: path.clone(),
                error,
            })?;
            files
                .templates
                .push((format!("{folder}/{name}"), path, source));
        }
    }
    for (name, path) in list_files(&dir.join("static"))? {
        let bytes = std::fs::read(&path).map_err(|error| ThemeError::Io {
            path: path.clone(),
            error,
        })?;
        files.assets.push((name, bytes.into()));
    }
    for locale in Locale::ALL {
        let path = dir
            .join("messages")
            .join(format!("{}.toml", locale.as_str()));
        if path.is_file() {
            let text = std::fs::read_to_string(&path).map_err(|error| ThemeError::Io {
                path: path.clone(),
                error,
            })?;
            files.catalogs.by_locale[locale.index()] = parse_catalog(&path, &text)?;
        }
    }
    Ok(files)
}

/// The entries of a folder as (file name, path), sorted; names that are not UTF-8 are skipped.
fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>, ThemeError> {
    let io_error = |error| ThemeError::Io {
        path: dir.to_owned(),
        error,
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        let path = entry.map_err(io_error)?.path();
        match path.file_name().and_then(|name| name.to_str()) {
            Some(name) => entries.push((name.to_owned(), path.clone())),
            None => {
                tracing::warn!(path = %path.display(), "skipping a file whose name is not UTF-8")
            }
        }
    }
    entries.sort();
    Ok(entries)
}

/// Every file under `root`, recursively, as (path relative to `root` joined with `/`, path).
/// Hidden files and folders are skipped; a missing `root` has no files.
fn list_files(root: &Path) -> Result<Vec<(String, PathBuf)>, ThemeError> {
    let mut files = Vec::new();
    if root.is_dir() {
        collect_files(root, "", &mut files)?;
    }
    Ok(files)
}

fn collect_files(
    dir: &Path,
    prefix: &str,
    files: &mut Vec<(String, PathBuf)>,
) -> Result<(), ThemeError> {
    for (name, path) in list_dir(dir)? {
        if name.starts_with('.') {
            continue;
        }
        let relative = format!("{prefix}{name}");
        if path.is_dir() {
            collect_files(&path, &format!("{relative}/"), files)?;
        } else {
            files.push((relative, path));
        }
    }
    Ok(())
}

/// Theme names appear in URLs (`/assets/<theme>/`) and config: keep them plain.
fn is_valid_theme_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=64).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A relative path made of plain segments: no traversal, no absolute or Windows paths.
fn is_plain_relative_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 512
        && !path.contains(['\\', ':', '\0'])
        && path
            .split('/')
            .all(|segment| !segment.is_empty() && !segment.starts_with('.'))
}

fn content_type(path: &str) -> &'static str {
    let extension = path.rsplit_once('.').map_or("", |(_, extension)| extension);
    match extension.to_ascii_lowercase().as_str() {
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "txt" => "text/plain; charset=utf-8",
        "json" => "application/json",
        "js" => "text/javascript; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every page template of the default theme (`themes/default/templates/`).
    static DEFAULT_TEMPLATES: std::sync::LazyLock<Vec<&'static str>> =
        std::sync::LazyLock::new(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../themes/default/templates");
            let mut names: Vec<&'static str> = list_files(&root)
                .expect("the default templates")
                .into_iter()
                .map(|(name, _)| &*Box::leak(name.into_boxed_str()))
                .collect();
            names.sort_unstable();
            names
        });

    /// Templates included by pages rather than rendered as pages.
    const PARTIALS: &[&str] = &[
        "alternatives.html",
        "upstream_buttons.html",
        "challenge_widget.html",
        "password_rules.html",
        "back_link.html",
        "password_violations.html",
        "reauth_notice.html",
    ];

    /// Message ids handlers pass in the context (`error`, `title`, `message`), which a
    /// scan of the templates cannot see.
    const IDS_PASSED_BY_HANDLERS: &[&str] = &[
        // The user-code page (web/device.rs): its error pages.
        "device.title",
        "device.error.locked",
        "device.error.expired",
        // Login callbacks (web/authorize.rs): a link opened elsewhere, or spent.
        "error.opened_elsewhere",
        "error.link_expired",
        // Account page (web/account.rs): errors, flash messages, event labels.
        "account.login_expired",
        "account.login_failed",
        "account.done.password_changed",
        "account.done.email_changed",
        "account.done.backup_email_set",
        "account.done.backup_email_cleared",
        "account.done.sessions_ended",
        "account.done.identity_unlinked",
        "account.identities.last_way",
        "account.identities.not_linked",
        "account.event.federation_linked",
        "account.event.federation_unlinked",
        "account.event.federation_refused",
        "account.backup.invalid",
        "account.backup.same_as_primary",
        "account.email.invalid",
        "account.email.same",
        "account.email.too_many_codes",
        "account.email.send_failed",
        "account.email.wrong_code",
        "account.email.expired",
        "account.email.too_many_attempts",
        "account.email.in_use",
        "account.email.nothing_pending",
        "account.event.login_succeeded",
        "account.event.login_failed",
        "account.event.logout",
        "account.event.user_created",
        "account.event.password_changed",
        "account.event.password_change_failed",
        "account.event.password_reset",
        "account.event.password_defined",
        "account.event.email_change_requested",
        "account.event.email_changed",
        "account.event.email_change_failed",
        "account.event.backup_email_set",
        "account.event.backup_email_cleared",
        "account.event.session_revoked",
        "account.event.device_remembered",
        "account.event.recovery_codes_regenerated",
        "account.event.other",
        "account_devices.name_empty",
        "account_devices.name_too_long",
        "account_devices.name_invalid",
        "account_devices.last_factor",
        "account_devices.busy",
        "account_devices.setup_expired",
        "account_devices.recovery_no_factor",
        "account_devices.done.added",
        "account_devices.done.renamed",
        "account_devices.done.removed",
        "account_devices.done.revoked",
        "org.error.email_invalid",
        "org.error.password_missing",
        "org.error.name_invalid",
        "org.error.invalid_credentials",
        "org.error.email_taken",
        "org.error.password_rules",
        "org.error.siret_length",
        "org.error.siret_digits",
        "org.error.siret_checksum",
        "org.error.siret_unknown",
        "org.error.siret_closed",
        "org.error.siret_taken",
        "org.error.registry_unavailable",
        "org.error.company_name_invalid",
        "org.error.country_invalid",
        "org.error.country_france",
        "org.error.expired",
        "login.webauthn.failed",
        "login.webauthn.no_credential",
        "login.webauthn.retry",
        "login.webauthn.enroll_failed",
        "login.webauthn.already_registered",
        "login.webauthn.name_invalid",
        "login.passkey.failed",
        "login.upstream.unavailable",
        "login.upstream.mismatch",
        "login.upstream.cancelled",
        "login.upstream.invalid",
        "login.upstream.wrong_issuer",
        "login.upstream.unverified_email",
        "login.upstream.no_account",
        "login.upstream.other_account",
        "login.upstream.cannot_link",
        "login.upstream.retry",
        "error.upstream_state",
        "method.upstream",
        "login.code.invalid",
        "login.code.expired",
        "login.code.too_many",
        "login.code.wait",
        "login.code.send_failed",
        "login.code.too_many_sent",
        "login.phone.invalid",
        "login.invalid_credentials",
        "login.locked",
        "login.session_expired",
        "login.invalid_identifier",
        "error.title",
        "error.invalid_request",
        "error.unknown_client",
        "error.invalid_redirect_uri",
        "error.flow_expired",
        "error.csrf",
        "error.internal",
        "error.not_found",
        "error.no_usable_method",
        "lang.en",
        "lang.fr",
        "method.identifier",
        "method.password",
        "method.email_code",
        "method.sms_code",
        "method.totp",
        "method.webauthn",
        "method.passkey",
        "method.recovery_code",
        "login.totp.title",
        "login.totp.label",
        "login.totp.help",
        "login.totp.submit",
        "login.totp.invalid",
        "login.totp.enroll.name_too_long",
        "recovery.identifier_invalid",
        "recovery.email_invalid",
        "recovery.challenge_failed",
        "recovery.throttled",
    ];

    /// A folder under the system temp folder, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let path =
                std::env::temp_dir().join(format!("idp-theme-test-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&path).expect("create temp dir");
            TempDir(path)
        }

        fn write(&self, relative: &str, content: &str) {
            let path = self.0.join(relative);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("create dirs");
            std::fs::write(path, content).expect("write file");
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn themes() -> Themes {
        Themes::load(None).expect("embedded themes load")
    }

    fn embedded_catalogs() -> [HashMap<String, String>; 2] {
        EMBEDDED_CATALOGS
            .map(|(_, name, text)| parse_catalog(Path::new(name), text).expect("catalog parses"))
    }

    fn lang_links() -> Value {
        Value::from(vec![
            context! { lang => "en", label => "English", href => "?ui_locales=en" },
            context! { lang => "fr", label => "Français", href => "?ui_locales=fr" },
        ])
    }

    /// A complete sample context for each template.
    fn sample_context(template: &str) -> Value {
        match template {
            "layout.html" => context! { client_name => "Marketplace", lang_links => lang_links() },
            "identifier.html" => context! {
                action => "/login/flow-1",
                csrf => "csrf-token",
                identifier => "",
                error => Value::from(()),
                client_name => "Marketplace",
                forgot_password_url => "/forgot-password?flow=1",
                forgot_identifier_url => "/forgot-identifier?flow=1",
                create_org_url => "/organizations/new?client_id=marketplace",
                lang_links => lang_links(),
                upstreams => vec![context! { name => "partner-sso", display_name => "Partner SSO" }],
                federate_action => "/login/flow-1/federate",
                linking => Value::from(()),
            },
            "upstream.html" => context! {
                action => "/login/flow-1/upstream",
                csrf => "csrf-token",
                error => "login.upstream.unverified_email",
                client_name => "Marketplace",
                linking => "Partner SSO",
                data => context! {
                    upstreams => vec![context! { name => "partner-sso", display_name => "Partner SSO" }],
                },
            },
            "upstream_buttons.html" => context! {
                csrf => "csrf-token",
                federate_action => "/login/flow-1/federate",
                upstreams => vec![context! { name => "partner-sso", display_name => "Partner SSO" }],
            },
            "password.html" => context! {
                action => "/login/flow-1",
                csrf => "csrf-token",
                identifier => "alice@example.com",
                change_identifier_url => "/login/flow-1/identifier",
                error => Value::from(()),
                client_name => "Marketplace",
                forgot_password_url => "/forgot-password?flow=1",
            },
            "error.html" => context! {
                title => "error.title",
                message => "error.unknown_client",
                detail => "client_id `shop` is not registered",
                status => 400,
            },
            "logout.html" => {
                context! { action => "/logout", csrf => "csrf-token", client_name => "Marketplace" }
            }
            "logged_out.html" => context! {},
            "logout_channels.html" => context! {
                frames => vec![
                    "https://marketplace.example/fc?iss=https%3A%2F%2Fidp&sid=s1",
                    "https://shop.example/fc",
                ],
                continue_url => "https://marketplace.example/?state=a\"b",
            },
            "device.html" => context! {
                action => "/device",
                csrf => "csrf-token",
                user_code => "BCDF-GHJK",
                error => "device.error.unknown_code",
            },
            "device_confirm.html" => context! {
                action => "/device/approve",
                csrf => "csrf-token",
                request => "req-1",
                client_name => "Cloud CLI",
                scopes => vec!["openid", "offline_access"],
                signed_in => true,
            },
            "device_done.html" => context! { approved => true, client_name => "Cloud CLI" },
            "demo_home.html" => context! {
                account_url => "http://127.0.0.1:8080/account",
                login_url => "/login",
                logout_url => "/logout",
                provider_url => "http://127.0.0.1:8080",
                demo_email => "demo@example.com",
            },
            "alternatives.html" => context! {
                csrf => "csrf-token",
                switch_action => "/login/flow-1/method",
                alternatives => vec![
                    context! { method => "totp", label => "method.totp" },
                    context! { method => "email_code", label => "method.email_code" },
                ],
            },
            "totp_enroll.html" => context! {
                action => "/login/flow-1/totp",
                step => "totp",
                csrf => "csrf-token",
                error => Value::from(()),
                client_name => "Marketplace",
                enrolling => true,
                switch_action => "/login/flow-1/method",
                alternatives => vec![context! { method => "webauthn", label => "method.webauthn" }],
                data => context! {
                    qr => "data:image/png;base64,iVBORw0KGgo=",
                    key => "JBSW Y3DP EHPK 3PXP JBSW Y3DP EHPK 3PXP",
                    issuer => "Acme",
                    account => "alice@example.com",
                    name => "",
                    name_max => 64,
                },
            },
            "recovery_codes.html" => context! {
                action => "/login/flow-1/totp",
                step => "totp",
                csrf => "csrf-token",
                error => Value::from(()),
                client_name => "Marketplace",
                data => context! { codes => vec!["abcde-fghjk", "mnpqr-stuvw"] },
            },
            "code.html" => context! {
                action => "/login/flow-1/email_code",
                step => "email_code",
                csrf => "csrf-token",
                error => Value::from(()),
                client_name => "Marketplace",
                enrolling => false,
                change_identifier_url => "/login/flow-1/restart",
                switch_action => "/login/flow-1/method",
                alternatives => vec![context! { method => "sms_code", label => "method.sms_code" }],
                data => context! {
                    method => "email_code",
                    destination => "a***@example.com",
                    valid_minutes => 10,
                    resend => true,
                },
            },
            "phone_enroll.html" => context! {
                action => "/login/flow-1/sms_code",
                step => "sms_code",
                csrf => "csrf-token",
                error => Value::from(()),
                client_name => "Marketplace",
                enrolling => true,
                switch_action => "/login/flow-1/method",
                alternatives => Vec::<Value>::new(),
                data => context! {},
            },
            "webauthn.html" => context! {
                action => "/login/flow-1/webauthn",
                step => "webauthn",
                csrf => "csrf-token",
                identifier => "alice@example.com",
                error => Value::from(()),
                client_name => "Marketplace",
                enrolling => false,
                change_identifier_url => "/login/flow-1/restart",
                switch_action => "/login/flow-1/method",
                alternatives => vec![context! { method => "totp", label => "method.totp" }],
                data => context! {
                    method => "webauthn",
                    options => Value::from(minijinja::value::Serde(serde_json::json!({
                        "publicKey": {
                            "challenge": "Y2hhbGxlbmdl",
                            "rpId": "login.example.com",
                            "allowCredentials": [{"type": "public-key", "id": "a2V5"}],
                            "userVerification": "preferred"
                        }
                    }))),
                },
            },
            "webauthn_enroll.html" => context! {
                action => "/login/flow-1/webauthn",
                step => "webauthn",
                csrf => "csrf-token",
                error => Value::from(()),
                client_name => "Marketplace",
                enrolling => true,
                switch_action => "/login/flow-1/method",
                alternatives => Vec::<Value>::new(),
                data => context! {
                    method => "webauthn",
                    options => Value::from(minijinja::value::Serde(serde_json::json!({
                        "publicKey": {
                            "challenge": "Y2hhbGxlbmdl",
                            "rp": {"id": "login.example.com", "name": "login.example.com"},
                            "user": {"id": "dXNlcg", "name": "alice@example.com", "displayName": "Alice"},
                            "pubKeyCredParams": [{"type": "public-key", "alg": -7}],
                            "authenticatorSelection": {"residentKey": "preferred", "requireResidentKey": false, "userVerification": "preferred"}
                        }
                    }))),
                    name_max => 64,
                },
            },
            "forgot_password.html" | "forgot_identifier.html" => context! {
                action => "/forgot-password",
                csrf => "csrf-token",
                client_id => "shop",
                typed => "alice@example.com",
                error => Value::from(()),
                field_error => false,
                retry_after => Value::from(()),
                challenge => r#"{"algorithm":"SHA-256","challenge":"ab","maxnumber":50000,"salt":"cd?expires=1","signature":"ef"}"#,
                client_name => "Marketplace",
                back_url => "https://shop.example/",
                lang_links => lang_links(),
            },
            "challenge_widget.html" => context! {},
            "back_link.html" => context! {
                client_name => "Marketplace",
                back_url => "https://shop.example/",
            },
            "reauth_notice.html" => context! {
                reauth_url => "/account/login?reauth=1&next=%2Faccount%2Fdevices",
            },
            "password_violations.html" => context! {
                violations => vec![
                    context! { key => "password.rule.length", params => context! { min => "8", max => "128" } },
                ],
            },
            "password_rules.html" => context! {
                password_rules => vec![
                    context! { key => "password.rule.length", params => context! { min => "8", max => "128" } },
                    context! { key => "password.rule.special_among", params => context! { allowed => "!?#" } },
                    context! { key => "password.rule.not_common", params => context! {} },
                ],
            },
            "recovery_sent.html" => context! {
                kind => "password",
                client_name => "Marketplace",
                again_url => "/forgot-password?client_id=shop",
                back_url => "https://shop.example/",
            },
            "reset_password.html" => context! {
                purpose => "reset",
                action => "/reset-password",
                csrf => "csrf-token",
                token => "link-token",
                client_id => "shop",
                account => "alice@example.com",
                password_rules => vec![context! { key => "password.rule.length", params => context! { min => "10", max => "128" } }],
                violations => vec![context! { key => "password.rule.missing_digit", params => context! {} }],
                mismatch => true,
                client_name => "Marketplace",
                lang_links => lang_links(),
            },
            "password_changed.html" => context! {
                purpose => "invitation",
                customer_id => "ab12345-idp",
                client_name => "Marketplace",
                back_url => "https://shop.example/",
            },
            "org_new.html" => context! {
                action => "/organizations/new",
                csrf => "csrf-token",
                client_id => "marketplace",
                challenge => r#"{"algorithm":"SHA-256","challenge":"ab","maxnumber":1000,"salt":"s","signature":"x"}"#,
                client_name => "Marketplace",
                typed => context! {
                    account => "new", email => "alice@example.com", name => "Alice",
                    domicile => "france", siret => "123 456 789 00012", company_name => "", country => "",
                },
                errors => context! { siret => "org.error.siret_checksum", password => "org.error.password_rules" },
                violations => vec![context! { key => "password.rule.too_short", params => context! { min => 8 } }],
                rules => vec![context! { key => "password.rule.length", params => context! { min => 8, max => 128 } }],
                notice => "org.error.registry_unavailable",
                retry_after => Value::from(()),
                back_url => "http://127.0.0.1:8081/",
                lang_links => lang_links(),
            },
            "org_confirm.html" => context! {
                action => "/organizations/confirm",
                csrf => "csrf-token",
                client_id => "marketplace",
                request => "req-1",
                client_name => "Marketplace",
                org => context! {
                    name => "Exemple SA", siret => "732 829 320 00074",
                    address => "1 rue de la Paix, 75002 Paris", country => "FR",
                },
                email => "alice@example.com",
                new_account => true,
                edit_url => "/organizations/new?client_id=marketplace",
                back_url => "http://127.0.0.1:8081/",
            },
            "org_created.html" => context! {
                org_name => "Exemple SA",
                email => "alice@example.com",
                customer_id => "ab12345-idp",
                client_name => "Marketplace",
                back_url => "http://127.0.0.1:8081/",
            },
            "account_devices.html" => context! {
                csrf => "csrf-token",
                client_name => "Marketplace",
                lang_links => lang_links(),
                back_url => "/account",
                notice => "account_devices.done.renamed",
                error => "account_devices.last_factor",
                reauth_url => "/account/login",
                mfa_enforced => true,
                name_max => 64,
                factors => vec![
                    context! {
                        id => "0190b3c4-0000-7000-8000-000000000001",
                        method_label => "method.totp",
                        label => "Work phone",
                        created => "2026-01-02 10:00 UTC",
                        last_used => "2026-01-03 09:30 UTC",
                        rename_action => "/account/devices/0190b3c4-0000-7000-8000-000000000001/rename",
                        delete_action => "/account/devices/0190b3c4-0000-7000-8000-000000000001/delete",
                        name_value => "",
                        name_error => "account_devices.name_empty",
                    },
                    context! {
                        id => "0190b3c4-0000-7000-8000-000000000002",
                        method_label => "method.webauthn",
                        label => "YubiKey",
                        created => "2026-01-04 10:00 UTC",
                        last_used => Value::from(()),
                        rename_action => "/account/devices/0190b3c4-0000-7000-8000-000000000002/rename",
                        delete_action => "/account/devices/0190b3c4-0000-7000-8000-000000000002/delete",
                        name_value => "YubiKey",
                        name_error => Value::from(()),
                    },
                ],
                add_totp_url => "/account/devices/totp/new",
                add_webauthn_url => "/account/devices/webauthn/new",
                recovery_codes_left => 7,
                regenerate_action => "/account/devices/recovery-codes",
                browsers => vec![context! {
                    label => "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0",
                    current => true,
                    created => "2026-01-02 10:00 UTC",
                    last_seen => "2026-01-05 08:00 UTC",
                    revoke_action => "/account/devices/browsers/0190b3c4-0000-7000-8000-000000000003/revoke",
                }],
            },
            "account_totp_new.html" => context! {
                csrf => "csrf-token",
                client_name => "Marketplace",
                lang_links => lang_links(),
                back_url => "/account/devices",
                error => "login.totp.invalid",
                name_error => false,
                reauth_url => Value::from(()),
                action => "/account/devices/totp/new",
                pending => "pending-1",
                qr => "data:image/png;base64,iVBORw0KGgo=",
                key => "JBSW Y3DP EHPK 3PXP JBSW Y3DP EHPK 3PXP",
                account => "alice@example.com",
                name => "",
                name_max => 64,
            },
            "account_webauthn_new.html" => context! {
                csrf => "csrf-token",
                client_name => "Marketplace",
                lang_links => lang_links(),
                back_url => "/account/devices",
                error => Value::from(()),
                name_error => false,
                reauth_url => Value::from(()),
                action => "/account/devices/webauthn/new",
                pending => "pending-1",
                options => Value::from(minijinja::value::Serde(serde_json::json!({
                    "publicKey": {
                        "challenge": "Y2hhbGxlbmdl",
                        "rp": {"id": "login.example.com", "name": "login.example.com"},
                        "user": {"id": "dXNlcg", "name": "alice@example.com", "displayName": "Alice"},
                        "pubKeyCredParams": [{"type": "public-key", "alg": -7}]
                    }
                }))),
                name => "",
                name_max => 64,
            },
            "account_recovery_codes.html" => context! {
                client_name => "Marketplace",
                lang_links => lang_links(),
                codes => vec!["abcde-fghjk", "mnpqr-stuvw"],
                reason => "regenerated",
                continue_url => "/account/devices",
            },
            "account.html" => context! {
                client_name => "Account",
                lang_links => lang_links(),
                done => "account.done.password_changed",
                name => "Alice Martin",
                email => "alice@example.com",
                email_verified => false,
                customer_id => "ab12345-idp",
                pending_email => "alice@new.example",
                email_url => "/account/email",
                password_url => "/account/password",
                devices_url => "/account/devices",
                logout_url => "/logout",
                backup_email => "alice@backup.example",
                backup_value => "alice@backup.example",
                backup_error => Value::from(()),
                backup_action => "/account/backup-email",
                csrf_backup => "csrf-token",
                sessions => vec![
                    context! { started => "2026-11-22 09:00 UTC", ip => "192.0.2.1", browser => "Firefox", current => true },
                    context! { started => "2026-11-21 18:30 UTC", ip => "", browser => "", current => false },
                ],
                other_sessions => 1,
                sessions_action => "/account/sessions/sign-out-others",
                csrf_sessions => "csrf-token",
                protection => context! {
                    has_second_factor => true,
                    totp_devices => vec!["Work phone"],
                    webauthn_keys => Vec::<String>::new(),
                    phone_verified => false,
                    recovery_codes_left => 9,
                    mfa_required_on_account => false,
                    enforced_by => vec![context! { name => "Acme SAS", kinds => "console, api" }],
                },
                events => vec![
                    context! { at => "2026-11-22 09:00 UTC", label => "account.event.login_succeeded", kind => "login.succeeded", ip => "192.0.2.1" },
                    context! { at => "2026-11-22 08:00 UTC", label => "account.event.other", kind => "org.created", ip => "" },
                ],
                identities => vec![context! { upstream => "partner-sso", name => "Partner SSO", email => "alice@partner.example", linked => "2026-11-20 10:00 UTC" }],
                identity_error => "account.identities.last_way",
                unlink_action => "/account/identities/unlink",
                csrf_identities => "csrf-token",
            },
            "account_password.html" => context! {
                client_name => "Account",
                lang_links => lang_links(),
                action => "/account/password",
                csrf => "csrf-token",
                account => "alice@example.com",
                has_password => true,
                rules => vec![context! { key => "password.rule.length", params => context! { min => "8", max => "128" } }],
                current_error => true,
                mismatch => true,
                violations => vec![context! { key => "password.rule.too_short", params => context! { min => "8" } }],
                locked_minutes => Value::from(()),
                back_url => "/account",
            },
            "account_email.html" => context! {
                client_name => "Account",
                lang_links => lang_links(),
                current_email => "alice@example.com",
                pending_email => "alice@new.example",
                valid_minutes => 10,
                request_action => "/account/email",
                confirm_action => "/account/email/confirm",
                cancel_action => "/account/email/cancel",
                csrf => "csrf-token",
                new_email => "",
                address_error => Value::from(()),
                code_error => "account.email.wrong_code",
                back_url => "/account",
            },
            "form_post.html" => context! {
                client_name => "Marketplace",
                lang_links => lang_links(),
                action => "https://marketplace.example/callback",
                fields => vec![
                    context! { name => "code", value => "code-1" },
                    context! { name => "state", value => "a\"b<c" },
                ],
            },
            other => {
                step_page_context(other).unwrap_or_else(|| panic!("no sample context for {other}"))
            }
        }
    }

    /// The method whose step renders `template` (`magic_link.html`), if a
    /// registered step does.
    fn step_of_template(template: &str) -> Option<&'static str> {
        let name = template.strip_suffix(".html")?;
        idp_core::steps::registry()
            .all()
            .find(|t| t.templates.contains(&name))
            .map(|t| t.id)
    }

    /// The context every step page gets (built in `web::authorize`), for a
    /// step's own page this test does not list: a method lands with its
    /// module, templates, messages and registry line, and its page is
    /// checked here as every page is (both locales, labels, no inline
    /// script or style). Its own tests check what it says.
    fn step_page_context(template: &str) -> Option<Value> {
        let method = step_of_template(template)?;
        Some(context! {
            action => format!("/login/flow-1/{method}"),
            step => method,
            csrf => "csrf-token",
            identifier => "alice@example.com",
            error => Value::from(()),
            client_name => "Marketplace",
            enrolling => false,
            change_identifier_url => "/login/flow-1/restart",
            switch_action => "/login/flow-1/method",
            alternatives => vec![context! { method => "password", label => "method.password" }],
            lang_links => lang_links(),
            data => context! { method => method },
        })
    }

    /// The text a page must show, per template and locale (as it appears in HTML).
    fn expected_text(template: &str, locale: Locale) -> &'static [&'static str] {
        match (template, locale) {
            ("account.html", Locale::En) => &[
                "Your account",
                "Your password is changed.",
                "ab12345-idp",
                "Change to alice@new.example waiting",
                "by Acme SAS, for these sign-ins: console, api",
                "Authenticator apps: 1: Work phone",
                "Unused recovery codes: 9",
                r#"href="/account/devices""#,
                "(this session)",
                "Sign out my other sessions (1)",
                "Signed in",
                "Other event (org.created)",
                r#"<section id="linked-identities""#,
                "Partner SSO (alice@partner.example)",
                r#"<input type="hidden" name="upstream" value="partner-sso">"#,
                "You cannot unlink your only way to sign in.",
            ],
            ("account.html", Locale::Fr) => &[
                "Votre compte",
                "Votre mot de passe est modifié.",
                "imposée par Acme SAS, pour ces connexions\u{a0}: console, api",
                "Déconnecter mes autres sessions (1)",
                "Activité récente",
            ],
            ("account_password.html", Locale::En) => &[
                "Change my password",
                "This is not your current password.",
                "The two passwords are different.",
                r#"autocomplete="current-password""#,
                r#"autocomplete="new-password""#,
            ],
            ("account_password.html", Locale::Fr) => &[
                "Changer mon mot de passe",
                "Ce n’est pas votre mot de passe actuel.",
            ],
            ("account_email.html", Locale::En) => &[
                "Change my email address",
                "We sent a code to alice@new.example.",
                "This code is not correct.",
                r#"action="/account/email/confirm""#,
            ],
            ("account_email.html", Locale::Fr) => &[
                "Changer mon adresse e-mail",
                "Nous avons envoyé un code à alice@new.example.",
            ],
            ("layout.html", Locale::En) => &["Marketplace", "Skip to main content", "Français"],
            ("alternatives.html", Locale::En) => &[
                "Other ways to sign in",
                "Authenticator app",
                "Code sent by email",
            ],
            ("alternatives.html", Locale::Fr) => &[
                "Autres façons de vous connecter",
                "Application d’authentification",
                "Code envoyé par e-mail",
            ],
            ("layout.html", Locale::Fr) => {
                &["Marketplace", "Aller au contenu principal", "English"]
            }
            ("identifier.html", Locale::En) => &[
                "Email or customer identifier",
                ">Continue</button>",
                "Forgot password?",
                "Forgot your customer identifier?",
                "to continue to Marketplace",
                r#"<a href="/organizations/new?client_id=marketplace">Create an organization</a>"#,
                r#"<form method="post" action="/login/flow-1/federate""#,
                "Continue with Partner SSO",
            ],
            ("identifier.html", Locale::Fr) => &[
                "Adresse e-mail ou identifiant client",
                ">Continuer</button>",
                "Mot de passe oublié\u{a0}?",
                "Identifiant client oublié\u{a0}?",
                "pour accéder à Marketplace",
            ],
            ("password.html", Locale::En) => &[
                "Enter your password",
                ">Sign in</button>",
                "Not you? Use another identifier",
                "alice@example.com",
            ],
            ("password.html", Locale::Fr) => &[
                "Saisissez votre mot de passe",
                ">Se connecter</button>",
                "Ce n’est pas vous\u{a0}? Utiliser un autre identifiant",
                "alice@example.com",
            ],
            ("error.html", Locale::En) => &[
                "Something went wrong",
                "not registered with us",
                "client_id `shop` is not registered",
                "Error 400",
            ],
            ("error.html", Locale::Fr) => &[
                "Une erreur est survenue",
                "n’est pas enregistrée chez nous",
                "client_id `shop` is not registered",
                "Erreur 400",
            ],
            ("logout.html", Locale::En) => &[
                "Do you want to sign out?",
                ">Sign out</button>",
                "Requested by Marketplace.",
            ],
            ("logout.html", Locale::Fr) => &[
                "Voulez-vous vous déconnecter\u{a0}?",
                ">Se déconnecter</button>",
                "Demande envoyée par Marketplace.",
            ],
            ("device.html", Locale::En) => &[
                r#"value="BCDF-GHJK""#,
                "This code is wrong, has expired or was already used.",
            ],
            ("device.html", Locale::Fr) => &["Connecter un appareil"],
            ("device_confirm.html", Locale::En) => &[
                "A device wants to sign in to Cloud CLI with your account.",
                "<code>offline_access</code>",
                r#"name="decision" value="approve""#,
                r#"name="decision" value="deny""#,
            ],
            ("device_confirm.html", Locale::Fr) => &["Autoriser cet appareil\u{a0}?"],
            ("device_done.html", Locale::En) => &["You may return to your device."],
            ("device_done.html", Locale::Fr) => &["Vous pouvez retourner à votre appareil."],
            ("logged_out.html", Locale::En) => &["You are signed out."],
            ("logged_out.html", Locale::Fr) => &["Votre session est fermée."],
            ("logout_channels.html", Locale::En) => &[
                r#"<iframe class="logout-frames__frame" src="https://marketplace.example/fc?iss=https%3A%2F%2Fidp&amp;sid=s1""#,
                r#"<iframe class="logout-frames__frame" src="https://shop.example/fc""#,
                r#"data-continue="https://marketplace.example/?state=a&quot;b""#,
                r#"<script src="/assets/default/logout-frames.js" defer></script>"#,
                ">Continue</a>",
            ],
            ("logout_channels.html", Locale::Fr) => &[">Continuer</a>"],
            ("demo_home.html", Locale::En) => &[
                "Sign in with the identity provider",
                "Demo account: demo@example.com",
                r#"<a href="http://127.0.0.1:8080/account">Account settings</a>"#,
                "http://127.0.0.1:8080",
            ],
            ("demo_home.html", Locale::Fr) => &[
                "Se connecter avec le fournisseur d’identité",
                "Compte de démonstration\u{a0}: demo@example.com",
                r#"<a href="http://127.0.0.1:8080/account">Paramètres du compte</a>"#,
                "http://127.0.0.1:8080",
            ],
            ("totp_enroll.html", Locale::En) => &[
                "Set up an authenticator app",
                r#"src="data:image/png;base64,iVBORw0KGgo=""#,
                "Unable to scan?</summary>",
                "JBSW Y3DP EHPK 3PXP JBSW Y3DP EHPK 3PXP",
                "alice@example.com",
                r#"value="Authenticator app" maxlength="64""#,
                r#"autocomplete="one-time-code""#,
                ">Confirm and continue</button>",
                "Security key or passkey",
            ],
            ("totp_enroll.html", Locale::Fr) => &[
                "Configurer une application d’authentification",
                "Impossible de scanner le code\u{a0}?</summary>",
                "Clé de configuration",
                r#"value="Application d’authentification""#,
                ">Confirmer et continuer</button>",
            ],
            ("recovery_codes.html", Locale::En) => &[
                "Save your recovery codes",
                "<code class=\"recovery-codes__code\">abcde-fghjk</code>",
                "mnpqr-stuvw",
                "Each code can be used only once.",
                r#"<input type="hidden" name="acknowledge" value="1">"#,
                ">I have saved these codes</button>",
            ],
            ("recovery_codes.html", Locale::Fr) => &[
                "Enregistrez vos codes de secours",
                "Chaque code ne peut servir qu’une seule fois.",
                ">J’ai enregistré ces codes</button>",
            ],
            ("code.html", Locale::En) => &[
                "Enter your verification code",
                "We sent a code to a***@example.com.",
                "Enter the 6-digit code. It is valid for 10 minutes.",
                r#"name="code" type="text" autocomplete="one-time-code" inputmode="numeric""#,
                r#"<button class="button button--secondary" type="submit" name="resend" value="1" formnovalidate>Send a new code</button>"#,
                "Not you? Use another identifier",
                "Code sent by text message",
            ],
            ("code.html", Locale::Fr) => &[
                "Saisissez votre code de vérification",
                "Nous avons envoyé un code à a***@example.com.",
                "Il est valable 10\u{a0}minutes.",
                ">Valider</button>",
                ">Recevoir un nouveau code</button>",
            ],
            ("phone_enroll.html", Locale::En) => &[
                "Add a mobile number",
                r#"name="phone" type="tel" value="" autocomplete="tel" inputmode="tel""#,
                "With the country code, for example +33 6 12 34 56 78.",
                ">Send a code</button>",
            ],
            ("phone_enroll.html", Locale::Fr) => &[
                "Ajoutez un numéro de mobile",
                "Numéro de mobile",
                ">Recevoir un code</button>",
            ],
            ("webauthn.html", Locale::En) => &[
                "Use your security key or passkey",
                "Signing in as alice@example.com",
                r#"data-webauthn="get""#,
                r#"<input type="hidden" name="credential" value="">"#,
                r#"<script type="application/json" id="webauthn-options">{"#,
                r#"<script src="/assets/default/webauthn.js" defer></script>"#,
                ">Continue</button>",
                "Not you? Use another identifier",
                "Authenticator app",
            ],
            ("webauthn.html", Locale::Fr) => &[
                "Utilisez votre clé de sécurité ou votre clé d’accès",
                "Connexion en tant que alice@example.com",
                ">Continuer</button>",
                "Application d’authentification",
            ],
            ("webauthn_enroll.html", Locale::En) => &[
                "Set up a security key or passkey",
                r#"data-webauthn="create""#,
                r#"name="name" type="text" value="Security key" maxlength="64""#,
                r#"<script type="application/json" id="webauthn-options">{"#,
                ">Set up the key</button>",
            ],
            ("webauthn_enroll.html", Locale::Fr) => &[
                "Configurer une clé de sécurité ou une clé d’accès",
                r#"value="Clé de sécurité""#,
                ">Configurer la clé</button>",
            ],
            ("forgot_password.html", Locale::En) => &[
                "Reset your password",
                r#"data-challenge="{&quot;algorithm&quot;:&quot;SHA-256&quot;"#,
                r#"<input type="hidden" name="altcha" value="">"#,
                r#"aria-live="polite""#,
                r#"<script src="/assets/default/altcha.js" defer></script>"#,
                r#"value="alice@example.com""#,
                ">Send the link</button>",
                r#"<a href="https://shop.example/">Back to Marketplace</a>"#,
            ],
            ("forgot_password.html", Locale::Fr) => &[
                "Réinitialiser votre mot de passe",
                ">Envoyer le lien</button>",
                "Retour à Marketplace",
            ],
            ("forgot_identifier.html", Locale::En) => &[
                "Find your customer identifier",
                r#"name="email" type="email" value="alice@example.com""#,
                r#"<input type="hidden" name="altcha" value="">"#,
                ">Send my identifier</button>",
            ],
            ("forgot_identifier.html", Locale::Fr) => &[
                "Retrouver votre identifiant client",
                ">Recevoir mon identifiant</button>",
            ],
            ("challenge_widget.html", Locale::En) => &[
                r#"data-text-working="Checking that you are not a robot"#,
                "needs JavaScript",
            ],
            ("challenge_widget.html", Locale::Fr) => &["Vérification terminée."],
            ("back_link.html", Locale::En) => {
                &[r#"<a href="https://shop.example/">Back to Marketplace</a>"#]
            }
            ("back_link.html", Locale::Fr) => &["Retour à Marketplace"],
            ("reauth_notice.html", Locale::En) => &[
                "sign in again before you add or remove a sign-in method",
                r#"<a href="/account/login?reauth=1&amp;next=%2Faccount%2Fdevices">Sign in again</a>"#,
            ],
            ("reauth_notice.html", Locale::Fr) => &["Me reconnecter"],
            ("password_violations.html", Locale::En) => &[
                r#"id="password-error""#,
                "At least 8 characters (at most 128)",
            ],
            ("password_violations.html", Locale::Fr) => &["Au moins 8 caractères (au plus 128)"],
            ("password_rules.html", Locale::En) => &[
                "At least 8 characters (at most 128)",
                r#"data-rule="password.rule.special_among" data-allowed="!?#">"#,
                r#"aria-live="polite""#,
                r#"data-text-medium="Medium""#,
                r#"<script src="/assets/default/password-meter.js" defer>"#,
            ],
            ("password_rules.html", Locale::Fr) => &[
                "Au moins 8 caractères (au plus 128)",
                r#"data-text-strong="Élevée""#,
            ],
            ("recovery_sent.html", Locale::En) => &[
                "Check your email",
                "If an account matches what you entered",
                r#"<a href="/forgot-password?client_id=shop">Ask again</a>"#,
            ],
            ("recovery_sent.html", Locale::Fr) => &[
                "Consultez vos e-mails",
                "Si un compte correspond à votre saisie",
            ],
            ("reset_password.html", Locale::En) => &[
                "Choose a new password",
                r#"<input type="hidden" name="token" value="link-token">"#,
                r#"autocomplete="new-password" data-password-meter="password-rules""#,
                r#"id="password-rules""#,
                r#"<script src="/assets/default/password-meter.js" defer></script>"#,
                "The two passwords are different.",
                ">Change my password</button>",
            ],
            ("reset_password.html", Locale::Fr) => &[
                "Choisir un nouveau mot de passe",
                "Les deux mots de passe sont différents.",
            ],
            ("password_changed.html", Locale::En) => &[
                "Your password is defined",
                "Your customer identifier is ab12345-idp.",
                r#"<a href="https://shop.example/">Go to Marketplace and sign in</a>"#,
            ],
            ("password_changed.html", Locale::Fr) => &[
                "Votre mot de passe est défini",
                "Votre identifiant client est ab12345-idp.",
            ],
            ("org_new.html", Locale::En) => &[
                "Create an organization",
                "This is not a valid SIRET number",
                "Nothing you typed is lost",
                r#"value="123 456 789 00012""#,
                r#"id="password-error""#,
                "data-challenge=",
            ],
            ("org_new.html", Locale::Fr) => &[
                "Créer une organisation",
                "Ce numéro SIRET n’est pas valide",
                "Domiciliée à l’étranger",
            ],
            ("org_confirm.html", Locale::En) => &[
                "Confirm your organization",
                "Exemple SA",
                "732 829 320 00074",
                "1 rue de la Paix, 75002 Paris",
                ">Create the organization</button>",
            ],
            ("org_confirm.html", Locale::Fr) => &["Confirmez votre organisation", "nouveau compte"],
            ("org_created.html", Locale::En) => &[
                "The organization Exemple SA is created.",
                "pending validation",
                "Go to Marketplace and sign in",
            ],
            ("org_created.html", Locale::Fr) => &[
                "L’organisation Exemple SA est créée.",
                "en attente de validation",
            ],
            ("account_devices.html", Locale::En) => &[
                "Sign-in devices",
                "Work phone",
                "Authenticator app",
                "Security key or passkey",
                "Added 2026-01-02 10:00 UTC · last used 2026-01-03 09:30 UTC",
                "never used to sign in",
                "Enter a name.",
                "Remove “YubiKey”</button>",
                "Unused recovery codes: 7.",
                "This browser",
                ">Forget this browser</button>",
                r#"<a href="/account/login">Sign in again</a>"#,
                "The name is changed.",
                "two-step verification is required for you",
            ],
            ("account_devices.html", Locale::Fr) => &[
                "Appareils de connexion",
                "Retirer «\u{a0}YubiKey\u{a0}»</button>",
                "Codes de secours inutilisés\u{a0}: 7.",
                "Me reconnecter",
            ],
            ("account_totp_new.html", Locale::En) => &[
                "Add an authenticator app",
                r#"<code class="setup-key__value" id="totp-key">JBSW"#,
                r#"name="pending" value="pending-1""#,
                r#"value="Authenticator app" maxlength="64""#,
                "Incorrect or expired code.",
                ">Add this app</button>",
            ],
            ("account_totp_new.html", Locale::Fr) => &[
                "Ajouter une application d’authentification",
                ">Ajouter cette application</button>",
            ],
            ("account_webauthn_new.html", Locale::En) => &[
                "Add a security key or passkey",
                r#"data-webauthn="create""#,
                r#"<input type="hidden" name="credential" value="">"#,
                r#"<script type="application/json" id="webauthn-options">{"#,
                r#"<script src="/assets/default/webauthn.js" defer></script>"#,
                r#"value="Security key" maxlength="64""#,
            ],
            ("account_webauthn_new.html", Locale::Fr) => &[
                "Ajouter une clé de sécurité ou une clé d’accès",
                r#"value="Clé de sécurité""#,
            ],
            ("account_recovery_codes.html", Locale::En) => &[
                "Save your recovery codes",
                "Your previous codes no longer work.",
                r#"<code class="recovery-codes__code">abcde-fghjk</code>"#,
                r#"<a href="/account/devices">I have saved these codes</a>"#,
            ],
            ("account_recovery_codes.html", Locale::Fr) => &[
                "Enregistrez vos codes de secours",
                "Les précédents ne fonctionnent plus.",
            ],
            ("upstream.html", Locale::En) => &[
                "Sign in with your organization",
                r#"<input type="hidden" name="upstream" value="partner-sso">"#,
                "Continue with Partner SSO",
                "did not confirm your email address",
                "Sign in to it once to link it to Partner SSO",
            ],
            ("upstream.html", Locale::Fr) => &[
                "Se connecter avec votre organisation",
                "Continuer avec Partner SSO",
            ],
            ("upstream_buttons.html", Locale::En) => &[
                r#"action="/login/flow-1/federate""#,
                "Continue with Partner SSO",
            ],
            ("upstream_buttons.html", Locale::Fr) => &["Continuer avec Partner SSO"],
            ("form_post.html", Locale::En) => &[
                r#"<form class="form" method="post" action="https://marketplace.example/callback" id="form-post">"#,
                r#"<input type="hidden" name="code" value="code-1">"#,
                r#"<input type="hidden" name="state" value="a&quot;b&lt;c">"#,
                r#"<script src="/assets/default/form-post.js" defer></script>"#,
            ],
            ("form_post.html", Locale::Fr) => &[r#"id="form-post""#],
            // A step's own page: the checks common to every page only; the
            // method's own tests check what it says.
            (other, _) if step_of_template(other).is_some() => &[],
            (other, _) => panic!("no expected text for {other}"),
        }
    }

    /// The quoted message ids of `t("...")` calls in a template source.
    fn literal_message_ids(source: &str) -> Vec<String> {
        let mut ids = Vec::new();
        let mut rest = source;
        while let Some(found) = rest.find("t(") {
            let is_call = rest[..found]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '.'));
            rest = &rest[found + 2..];
            if !is_call {
                continue;
            }
            let argument = rest.trim_start();
            let Some(quote) = argument.chars().next().filter(|c| *c == '"' || *c == '\'') else {
                continue;
            };
            let Some(end) = argument[1..].find(quote) else {
                continue;
            };
            // `t("lang." ~ code)` builds the id at render time: not a literal id.
            if !argument[2 + end..].trim_start().starts_with('~') {
                ids.push(argument[1..1 + end].to_owned());
            }
        }
        ids
    }

    #[test]
    fn ui_locales_take_precedence_over_accept_language() {
        assert_eq!(negotiate_locale(Some("fr"), Some("en")), Locale::Fr);
        assert_eq!(negotiate_locale(Some("en"), Some("fr")), Locale::En);
        assert_eq!(
            negotiate_locale(Some("de fr-CA en"), Some("en")),
            Locale::Fr
        );
        assert_eq!(negotiate_locale(Some("  de   es "), Some("fr")), Locale::Fr);
        assert_eq!(negotiate_locale(Some(""), Some("fr")), Locale::Fr);
    }

    #[test]
    fn regional_variants_match_their_language() {
        assert_eq!(negotiate_locale(Some("fr-CA"), None), Locale::Fr);
        assert_eq!(negotiate_locale(Some("FR_be"), None), Locale::Fr);
        assert_eq!(negotiate_locale(Some("en-GB"), Some("fr")), Locale::En);
        assert_eq!(negotiate_locale(None, Some("fr-CH, en;q=0.8")), Locale::Fr);
    }

    #[test]
    fn accept_language_q_values_decide() {
        assert_eq!(
            negotiate_locale(None, Some("en;q=0.4, fr;q=0.9")),
            Locale::Fr
        );
        assert_eq!(
            negotiate_locale(None, Some("de-DE, fr;q=0.5, en;q=0.3")),
            Locale::Fr
        );
        assert_eq!(
            negotiate_locale(None, Some("fr;q=0.5, en;q=0.5")),
            Locale::Fr
        );
        assert_eq!(negotiate_locale(None, Some("fr;q=0, en;q=0.1")), Locale::En);
        assert_eq!(negotiate_locale(None, Some("en;q=0, *;q=0.5")), Locale::Fr);
        assert_eq!(
            negotiate_locale(None, Some("fr;q=0.4, *;q=0.8")),
            Locale::En
        );
        assert_eq!(
            negotiate_locale(None, Some("fr ; q=0.900 , en;q=1.0")),
            Locale::En
        );
        assert_eq!(
            negotiate_locale(None, Some("fr-CA;q=0.2, fr;q=0.9, en;q=0.5")),
            Locale::Fr
        );
    }

    #[test]
    fn garbage_gives_english() {
        assert_eq!(negotiate_locale(None, None), Locale::En);
        assert_eq!(
            negotiate_locale(Some("xx yy"), Some("de, es;q=0.5")),
            Locale::En
        );
        assert_eq!(negotiate_locale(Some("!!!"), Some(";;;,,,q=")), Locale::En);
        assert_eq!(negotiate_locale(None, Some("fr;q=2")), Locale::En);
        assert_eq!(negotiate_locale(None, Some("fr;q=abc")), Locale::En);
        assert_eq!(negotiate_locale(None, Some("fr;q=0.12345")), Locale::En);
        assert_eq!(negotiate_locale(None, Some("français")), Locale::En);
    }

    #[test]
    fn locale_serializes_as_its_tag() {
        assert_eq!(Locale::En.as_str(), "en");
        assert_eq!(Locale::Fr.as_str(), "fr");
        assert_eq!(
            Value::from(minijinja::value::Serde(Locale::Fr)).to_string(),
            "fr"
        );
    }

    #[test]
    fn english_and_french_catalogs_have_the_same_ids() {
        let [en, fr] = embedded_catalogs();
        let en_ids: BTreeSet<_> = en.keys().collect();
        let fr_ids: BTreeSet<_> = fr.keys().collect();
        assert_eq!(
            en_ids.difference(&fr_ids).collect::<Vec<_>>(),
            Vec::<&&String>::new(),
            "ids in en.toml but not in fr.toml"
        );
        assert_eq!(
            fr_ids.difference(&en_ids).collect::<Vec<_>>(),
            Vec::<&&String>::new(),
            "ids in fr.toml but not in en.toml"
        );
        assert!(
            en.values()
                .chain(fr.values())
                .all(|text| !text.trim().is_empty())
        );
    }

    #[test]
    fn every_message_id_used_by_the_default_templates_exists() {
        let [en, fr] = embedded_catalogs();
        let themes = themes();
        let mut checked = 0;
        let mut names = Vec::new();
        for (name, template) in themes.default.env.templates() {
            names.push(name.to_owned());
            for id in literal_message_ids(template.source()) {
                assert!(en.contains_key(&id), "{name}: `{id}` missing from en.toml");
                assert!(fr.contains_key(&id), "{name}: `{id}` missing from fr.toml");
                checked += 1;
            }
        }
        for id in IDS_PASSED_BY_HANDLERS {
            assert!(
                en.contains_key(*id) && fr.contains_key(*id),
                "`{id}` missing"
            );
        }
        assert!(checked > 40, "the scan found only {checked} ids");
        names.sort();
        let mut expected: Vec<_> = DEFAULT_TEMPLATES
            .iter()
            .chain(EMBEDDED_MESSAGE_TEMPLATES.iter().map(|(name, _)| name))
            .map(|name| (*name).to_owned())
            .collect();
        expected.sort();
        assert_eq!(names, expected);
    }

    #[test]
    fn embedded_message_templates_match_their_folders() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../themes/default");
        let mut on_disk = BTreeSet::new();
        for folder in MESSAGE_TEMPLATE_FOLDERS {
            for (name, _) in list_files(&root.join(folder)).expect("folder") {
                on_disk.insert(format!("{folder}/{name}"));
            }
        }
        let embedded: BTreeSet<String> = EMBEDDED_MESSAGE_TEMPLATES
            .iter()
            .map(|(name, _)| (*name).to_owned())
            .collect();
        assert_eq!(on_disk, embedded, "update EMBEDDED_MESSAGE_TEMPLATES");
    }

    #[test]
    fn emails_and_text_messages_render_in_both_locales() {
        let themes = themes();
        let ctx = || {
            context! { kind => "login_code", code => "482913", valid_minutes => 10, client_name => "A & B" }
        };
        let render = |template: &str, locale| {
            themes
                .render(DEFAULT_THEME, template, locale, ctx())
                .unwrap_or_else(|e| panic!("{template}: {e}"))
        };
        for family in ["login_code", "phone_verification_code"] {
            for locale in Locale::ALL {
                let subject = render(&format!("emails/{family}.subject.txt"), locale);
                assert!(
                    !subject.contains('\n') && subject.contains("A & B"),
                    "{subject:?}"
                );
                let text = render(&format!("emails/{family}.txt"), locale);
                assert!(
                    text.contains("    482913\n") && text.contains("A & B"),
                    "{text}"
                );
                let html = render(&format!("emails/{family}.html"), locale);
                assert!(html.contains(">482913</p>"), "{html}");
                assert!(html.contains(&format!("<html lang=\"{}\">", locale.as_str())));
                assert!(
                    html.contains("A &amp; B") && !html.contains("A & B"),
                    "{html}"
                );
                assert!(!html.contains("<script"), "{html}");
                let sms = render(&format!("sms/{family}.txt"), locale);
                assert!(sms.starts_with("482913 ") && !sms.contains('\n'), "{sms:?}");
                assert!(sms.chars().count() <= 160, "{sms}");
            }
        }
        assert_eq!(
            render("emails/login_code.subject.txt", Locale::Fr),
            "Votre code de connexion à A & B"
        );
        assert!(render("emails/login_code.txt", Locale::Fr).contains("valable 10\u{a0}minutes"));
        assert!(
            render("sms/login_code.txt", Locale::En)
                .starts_with("482913 is your A & B sign-in code. It expires in 10 min.")
        );

        // A theme folder overrides one email template and inherits the rest.
        let dir = TempDir::new();
        dir.write(
            "acme/emails/login_code.subject.txt",
            "[Acme] {{ t(\"email.login_code.subject\", client_name=client_name) }}",
        );
        let themes = Themes::load(Some(&dir.0)).expect("loads");
        assert_eq!(
            themes
                .render("acme", "emails/login_code.subject.txt", Locale::En, ctx())
                .expect("renders"),
            "[Acme] Your sign-in code for A & B"
        );
        assert!(
            themes
                .render("acme", "sms/login_code.txt", Locale::Fr, ctx())
                .expect("inherited")
                .contains("code de connexion")
        );
    }

    #[test]
    fn totp_pages_without_data_still_render() {
        // The runner's "locked" page carries no step data; a reload of the
        // recovery codes page carries no codes.
        let themes = themes();
        let ctx = context! { error => "login.locked", retry_after => "10:42", data => context! {}, ..sample_context("totp_enroll.html") };
        let html = themes
            .render(DEFAULT_THEME, "totp_enroll.html", Locale::En, ctx)
            .expect("renders");
        assert!(
            html.contains("Too many attempts. Try again after 10:42."),
            "{html}"
        );
        assert!(!html.contains("qr-code"), "{html}");
        let ctx = context! { data => context! { already_shown => true }, ..sample_context("recovery_codes.html") };
        let html = themes
            .render(DEFAULT_THEME, "recovery_codes.html", Locale::Fr, ctx)
            .expect("renders");
        assert!(html.contains("ils ne sont plus affichés"), "{html}");
        assert!(!html.contains("recovery-codes__code"), "{html}");
        assert!(html.contains(r#"name="acknowledge" value="1""#));
    }

    #[test]
    fn the_scan_finds_literal_ids_only() {
        let ids = literal_message_ids(
            r#"{{ t("a.b") }} {{ asset("style.css") }} {{ t( 'c' , x=1) }} {{ t(error) }} {{ x.t("no") }} {{ t("lang." ~ x) }}"#,
        );
        assert_eq!(ids, ["a.b", "c"]);
    }

    #[test]
    fn every_template_renders_in_both_locales() {
        let themes = themes();
        themes
            .check_templates(DEFAULT_THEME, &DEFAULT_TEMPLATES)
            .expect("all templates present");
        for template in DEFAULT_TEMPLATES.iter() {
            for locale in Locale::ALL {
                let html = themes
                    .render(DEFAULT_THEME, template, locale, sample_context(template))
                    .unwrap_or_else(|e| panic!("{template} in {locale:?}: {e}"));
                // Partials are included in pages; only pages have the page structure.
                if !PARTIALS.contains(template) {
                    assert!(
                        html.contains(&format!("<html lang=\"{}\">", locale.as_str())),
                        "{template}: {html}"
                    );
                    assert!(html.contains("/assets/default/style.css"), "{template}");
                    assert!(html.contains("/assets/default/theme.css"), "{template}");
                    assert_eq!(html.matches("<main").count(), 1, "{template}");
                    if *template != "layout.html" {
                        assert_eq!(html.matches("<h1").count(), 1, "{template}");
                    }
                }
                assert!(!html.contains("style="), "{template}: inline style");
                // Scripts come from the theme's assets only (CSP `script-src 'self'`);
                // the only inline ones are JSON data blocks, which browsers do not run.
                for (at, _) in html.match_indices("<script") {
                    let tag = &html[at..];
                    assert!(
                        tag.starts_with(r#"<script src="/assets/"#)
                            || tag.starts_with(r#"<script type="application/json""#),
                        "{template}: inline script"
                    );
                }
                assert!(!html.contains("<style"), "{template}: style element");
                for text in expected_text(template, locale) {
                    assert!(
                        html.contains(text),
                        "{template} in {locale:?}: `{text}` not in {html}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_input_has_a_label() {
        let themes = themes();
        for template in DEFAULT_TEMPLATES.iter() {
            let html = themes
                .render(
                    DEFAULT_THEME,
                    template,
                    Locale::En,
                    sample_context(template),
                )
                .expect("renders");
            for input in html.split("<input").skip(1) {
                let tag = &input[..input.find('>').expect("closed tag")];
                if tag.contains("type=\"hidden\"") {
                    continue;
                }
                let id = tag
                    .split("id=\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .unwrap_or_else(|| panic!("{template}: input without id: {tag}"));
                assert!(
                    html.contains(&format!("<label class=\"field__label\" for=\"{id}\">")),
                    "{template}: #{id}"
                );
            }
        }
    }

    #[test]
    fn code_form_follows_its_method_and_links_errors() {
        let themes = themes();
        let render = |template: &str, ctx: Value| {
            themes
                .render(DEFAULT_THEME, template, Locale::En, ctx)
                .expect("renders")
        };
        // A recovery code: text, not a one-time code; no resend.
        let html = render(
            "code.html",
            context! {
                data => context! { method => "recovery_code", autocomplete => "off", inputmode => "text" },
                step => "recovery_code",
                ..sample_context("code.html")
            },
        );
        assert!(html.contains("Enter a recovery code"), "{html}");
        assert!(html.contains(">Recovery code</label>"), "{html}");
        assert!(
            html.contains(r#"autocomplete="off" inputmode="text""#),
            "{html}"
        );
        assert!(!html.contains("name=\"resend\""), "{html}");
        assert!(!html.contains("We sent"), "{html}");
        // A texted code to a number being enrolled, after a refused resend.
        let html = render(
            "code.html",
            context! {
                step => "sms_code",
                enrolling => true,
                error => "login.code.wait",
                data => context! {
                    method => "sms_code",
                    destination => "+33*******78",
                    resend => true,
                    change_phone => true,
                    wait_seconds => 12,
                },
                ..sample_context("code.html")
            },
        );
        assert!(html.contains("Confirm your mobile number"), "{html}");
        assert!(
            html.contains("We sent a code by text message to +33*******78."),
            "{html}"
        );
        assert!(
            html.contains(
                r#"<p class="field__error" id="code-error">You can ask for a new code in 12 s.</p>"#
            ),
            "{html}"
        );
        assert!(
            html.contains(r#"aria-describedby="code-help code-error" aria-invalid="true""#),
            "{html}"
        );
        assert!(
            html.contains(
                r#"name="change_phone" value="1" formnovalidate>Use another number</button>"#
            ),
            "{html}"
        );
        assert!(
            !html.contains("Not you?"),
            "no identifier change while enrolling: {html}"
        );
        // A customer identifier was typed: no address is named. A new code was sent.
        let html = render(
            "code.html",
            context! { data => context! { method => "email_code", resend => true, resent => true }, ..sample_context("code.html") },
        );
        assert!(
            html.contains("We sent a code to the email address of your account."),
            "{html}"
        );
        assert!(
            html.contains(r#"<p class="notice" role="status">We sent you a new code."#),
            "{html}"
        );
        // The "locked" page: no data at all.
        let html = render(
            "code.html",
            context! { data => context! {}, error => "login.locked", retry_after => "10:42 UTC", ..sample_context("code.html") },
        );
        assert!(
            html.contains("Too many attempts. Try again after 10:42 UTC."),
            "{html}"
        );
        // An invalid number keeps what was typed.
        let html = render(
            "phone_enroll.html",
            context! { error => "login.phone.invalid", data => context! { phone => "06 12" }, ..sample_context("phone_enroll.html") },
        );
        assert!(html.contains(r#"value="06 12""#), "{html}");
        assert!(html.contains(r#"<p class="field__error" id="phone-error">Enter a mobile number with its country code"#), "{html}");
        assert!(
            html.contains(r#"aria-describedby="phone-help phone-error" aria-invalid="true""#),
            "{html}"
        );
    }

    #[test]
    fn identifier_form_has_its_fields_and_links_errors() {
        let themes = themes();
        let mut ctx = sample_context("identifier.html");
        ctx = context! { error => "login.invalid_identifier", identifier => "bob", ..ctx };
        let html = themes
            .render(DEFAULT_THEME, "identifier.html", Locale::En, ctx)
            .expect("renders");
        assert!(html.contains(r#"<input type="hidden" name="csrf" value="csrf-token">"#));
        assert!(html.contains(r#"action="/login/flow-1""#));
        assert!(
            html.contains(r#"name="identifier" type="text" value="bob" autocomplete="username""#)
        );
        assert!(html.contains(r#"<p class="field__error" id="identifier-error">Enter a valid email address or customer identifier.</p>"#));
        assert!(html.contains(
            r#"aria-describedby="identifier-help identifier-error" aria-invalid="true""#
        ));
        assert!(
            html.contains("<title>Error: Sign in · Marketplace</title>"),
            "{html}"
        );
    }

    #[test]
    fn password_form_pairs_the_username_and_shows_the_lock_time() {
        let themes = themes();
        let ctx = context! { error => "login.locked", retry_after => "10:42", ..sample_context("password.html") };
        let html = themes
            .render(DEFAULT_THEME, "password.html", Locale::En, ctx)
            .expect("renders");
        assert!(html.contains(r#"name="username" type="text" value="alice@example.com" autocomplete="username" readonly"#));
        assert!(
            html.contains(r#"name="password" type="password" autocomplete="current-password""#)
        );
        assert!(
            html.contains("Too many attempts. Try again after 10:42."),
            "{html}"
        );
        assert!(html.contains(r#"aria-describedby="password-error""#));
        assert!(html.contains(r#"href="/login/flow-1/identifier""#));

        let ctx = context! { error => "login.locked", ..sample_context("password.html") };
        let html = themes
            .render(DEFAULT_THEME, "password.html", Locale::Fr, ctx)
            .expect("renders");
        assert!(
            html.contains("Trop de tentatives. Réessayez plus tard."),
            "{html}"
        );

        let ctx =
            context! { error => "login.invalid_credentials", ..sample_context("password.html") };
        let html = themes
            .render(DEFAULT_THEME, "password.html", Locale::Fr, ctx)
            .expect("renders");
        assert!(
            html.contains("Identifiant ou mot de passe incorrect."),
            "{html}"
        );
    }

    #[test]
    fn demo_home_shows_verified_claims_when_signed_in() {
        let themes = themes();
        let ctx = context! {
            user => vec![
                context! { name => "sub", value => "0192-abc" },
                context! { name => "email", value => "demo@example.com" },
            ],
            id_token_claims => "{\n  \"sub\": \"0192-abc\"\n}",
            error => "state mismatch",
            ..sample_context("demo_home.html")
        };
        let html = themes
            .render(DEFAULT_THEME, "demo_home.html", Locale::En, ctx)
            .expect("renders");
        assert!(
            html.contains("<code>email</code></th><td>demo@example.com</td>"),
            "{html}"
        );
        assert!(
            html.contains("&quot;sub&quot;: &quot;0192-abc&quot;"),
            "{html}"
        );
        assert!(html.contains(r#"href="/logout">Sign out</a>"#));
        assert!(html.contains("Sign-in failed") && html.contains("state mismatch"));
        assert!(!html.contains("Sign in with the identity provider"));
        assert!(
            html.contains("<title>You are signed in · Demo portal</title>"),
            "{html}"
        );
    }

    #[test]
    fn language_links_mark_the_current_language() {
        let html = themes()
            .render(
                DEFAULT_THEME,
                "logged_out.html",
                Locale::Fr,
                context! { lang_links => lang_links() },
            )
            .expect("renders");
        assert!(
            html.contains(r#"<nav class="lang-switch" aria-label="Langue">"#),
            "{html}"
        );
        assert!(html.contains(r#"<a class="lang-switch__link" href="?ui_locales=en" hreflang="en" lang="en">English</a>"#), "{html}");
        assert!(html.contains(r#"<span class="lang-switch__current" lang="fr" aria-current="true">Français</span>"#), "{html}");
    }

    #[test]
    fn html_is_escaped() {
        let themes = themes();
        let ctx = context! {
            identifier => "<script>alert(1)</script>\"",
            client_name => "A & B <i>",
            ..sample_context("identifier.html")
        };
        let html = themes
            .render(DEFAULT_THEME, "identifier.html", Locale::En, ctx)
            .expect("renders");
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("value=\"&lt;script&gt;alert(1)&lt;/script&gt;&quot;\""),
            "{html}"
        );
        assert!(!html.contains("<i>"));
        assert!(html.contains("A &amp; B &lt;i&gt;"));
        assert!(!html.contains("&amp;amp;"), "double escaping: {html}");

        let ctx = context! { detail => "<script>x</script>", ..sample_context("error.html") };
        let html = themes
            .render(DEFAULT_THEME, "error.html", Locale::En, ctx)
            .expect("renders");
        assert!(!html.contains("<script>"));
    }

    #[test]
    fn messages_fill_placeholders_and_fall_back() {
        let themes = themes();
        let render = |source: &str, locale: Locale| {
            let env = &themes.default.env;
            env.render_str(source, context! { lang => locale.as_str() })
                .expect("renders")
        };
        assert_eq!(
            render(r#"{{ t("login.locked", retry_after="9:30") }}"#, Locale::Fr),
            "Trop de tentatives. Réessayez après 9:30."
        );
        assert_eq!(
            render(r#"{{ t("error.status", status=404) }}"#, Locale::En),
            "Error 404"
        );
        assert_eq!(
            render(r#"{{ t("login.locked") }}"#, Locale::En),
            "Too many attempts. Try again after {retry_after}."
        );
        assert_eq!(render(r#"{{ t("no.such.id") }}"#, Locale::Fr), "no.such.id");
        assert_eq!(render(r#"{{ t("lang.fr") }}"#, Locale::En), "Français");
    }

    #[test]
    fn unknown_theme_renders_the_default_theme() {
        let themes = themes();
        assert!(themes.has_theme("default"));
        assert!(!themes.has_theme("acme"));
        let html = themes
            .render("acme", "logged_out.html", Locale::En, context! {})
            .expect("renders");
        assert!(html.contains("/assets/default/style.css"));
        assert!(matches!(
            themes.render("default", "nope.html", Locale::En, context! {}),
            Err(ThemeError::Render { .. })
        ));
    }

    #[test]
    fn check_templates_reports_missing_templates_and_themes() {
        let themes = themes();
        assert!(
            themes
                .check_templates("default", &["password.html"])
                .is_ok()
        );
        let error = themes
            .check_templates("default", &["password.html", "totp.html"])
            .expect_err("totp.html is missing");
        assert!(
            matches!(&error, ThemeError::MissingTemplate { template, .. } if template == "totp.html")
        );
        assert!(matches!(
            themes.check_templates("acme", &["password.html"]),
            Err(ThemeError::UnknownTheme(name)) if name == "acme"
        ));
    }

    #[test]
    fn embedded_assets_are_served_with_their_type() {
        let themes = themes();
        let (content_type, css) = themes.asset("default", "style.css").expect("style.css");
        assert_eq!(content_type, "text/css; charset=utf-8");
        assert!(matches!(css, Cow::Borrowed(_)));
        assert!(std::str::from_utf8(&css).expect("utf-8").contains(".card"));
        assert_eq!(
            themes.asset("default", "logo.svg").expect("logo").0,
            "image/svg+xml"
        );
        assert!(themes.asset("default", "missing.css").is_none());
        assert!(themes.asset("acme", "style.css").is_none());
    }

    #[test]
    fn webauthn_pages_embed_options_as_inert_json() {
        let themes = themes();
        let hostile =
            serde_json::json!({"publicKey": {"challenge": "</script><script>alert(1)</script>"}});
        let ctx = context! {
            data => context! { method => "passkey", options => Value::from(minijinja::value::Serde(&hostile)) },
            step => "passkey",
            ..sample_context("webauthn.html")
        };
        let html = themes
            .render(DEFAULT_THEME, "webauthn.html", Locale::En, ctx)
            .expect("renders");
        assert!(!html.contains("<script>alert"), "{html}");
        let start = html
            .find(r#"id="webauthn-options">"#)
            .expect("options block")
            + 22;
        let end = start + html[start..].find("</script>").expect("end of block");
        let back: serde_json::Value = serde_json::from_str(&html[start..end]).expect("JSON");
        assert_eq!(back, hostile);
        // Passwordless: no identifier, its own texts.
        assert!(html.contains("Sign in with a passkey</h1>"), "{html}");
        assert!(html.contains(">Sign in with a passkey</button>"), "{html}");
        assert!(!html.contains("Signing in as"), "{html}");

        // Locked: the message, and no ceremony to start.
        let ctx = context! {
            error => "login.locked",
            retry_after => "10:42",
            data => context! {},
            ..sample_context("webauthn.html")
        };
        let html = themes
            .render(DEFAULT_THEME, "webauthn.html", Locale::En, ctx)
            .expect("renders");
        assert!(
            html.contains("Too many attempts. Try again after 10:42."),
            "{html}"
        );
        assert!(!html.contains("data-webauthn"), "{html}");

        let ctx = context! { error => "login.webauthn.name_invalid", ..sample_context("webauthn_enroll.html") };
        let html = themes
            .render(DEFAULT_THEME, "webauthn_enroll.html", Locale::Fr, ctx)
            .expect("renders");
        assert!(
            html.contains("Utilisez au plus 64\u{a0}caractères"),
            "{html}"
        );
        assert!(html.contains(r#"aria-invalid="true""#), "{html}");
    }

    #[test]
    fn scripts_are_served_as_javascript() {
        let (content_type, js) = themes()
            .asset("default", "webauthn.js")
            .expect("webauthn.js");
        assert_eq!(content_type, "text/javascript; charset=utf-8");
        assert!(
            std::str::from_utf8(&js)
                .expect("utf-8")
                .contains("navigator.credentials")
        );
    }

    #[test]
    fn embedded_asset_list_matches_the_static_folder() {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../themes/default/static");
        let on_disk: BTreeSet<String> = list_files(&folder)
            .expect("static folder")
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        let embedded: BTreeSet<String> = EMBEDDED_ASSETS
            .iter()
            .map(|(name, _)| (*name).to_owned())
            .collect();
        assert_eq!(on_disk, embedded, "update EMBEDDED_ASSETS");
    }

    #[test]
    fn asset_paths_cannot_escape_the_theme() {
        let dir = TempDir::new();
        dir.write("acme/static/img/logo.png", "png");
        dir.write("secret.txt", "secret");
        dir.write("acme/static/.hidden", "hidden");
        let themes = Themes::load(Some(&dir.0)).expect("loads");
        assert_eq!(
            themes.asset("acme", "img/logo.png").expect("nested file").0,
            "image/png"
        );
        for path in [
            "../secret.txt",
            "../../secret.txt",
            "img/../../secret.txt",
            "img/../logo.png",
            "./style.css",
            "/style.css",
            "/etc/passwd",
            "img\\logo.png",
            "..\\secret.txt",
            "C:/style.css",
            "img//logo.png",
            "",
            ".hidden",
            "style.css\0",
        ] {
            assert!(themes.asset("acme", path).is_none(), "{path:?} was served");
            assert!(
                themes.asset("default", path).is_none(),
                "{path:?} was served"
            );
        }
        assert!(themes.asset("..", "secret.txt").is_none());
    }

    #[test]
    fn a_theme_overrides_only_what_it_provides() {
        let dir = TempDir::new();
        dir.write(
            "acme/static/style.css",
            ".card { border-color: rebeccapurple; }",
        );
        dir.write(
            "acme/messages/fr.toml",
            "login.identifier.submit = \"Suivant\"\n",
        );
        dir.write("README.md", "not a theme");
        dir.write(".git/config", "not a theme");
        let themes = Themes::load(Some(&dir.0)).expect("loads");
        assert!(themes.has_theme("acme"));
        assert!(!themes.has_theme(".git"));

        let (_, css) = themes.asset("acme", "style.css").expect("own style.css");
        assert_eq!(&*css, b".card { border-color: rebeccapurple; }");
        let (_, logo) = themes.asset("acme", "logo.svg").expect("inherited logo");
        assert_eq!(
            &*logo,
            themes
                .asset("default", "logo.svg")
                .expect("logo")
                .1
                .as_ref()
        );
        let (_, default_css) = themes.asset("default", "style.css").expect("default css");
        assert!(
            std::str::from_utf8(&default_css)
                .expect("utf-8")
                .contains("--color-primary")
        );

        let ctx = sample_context("identifier.html");
        let html = themes
            .render("acme", "identifier.html", Locale::Fr, ctx.clone())
            .expect("renders");
        assert!(html.contains(">Suivant</button>"), "{html}");
        assert!(
            html.contains("Adresse e-mail ou identifiant client"),
            "fallback message"
        );
        assert!(html.contains(r#"href="/assets/acme/style.css""#));
        assert!(html.contains(r#"src="/assets/acme/logo.svg""#));
        let english = themes
            .render("acme", "identifier.html", Locale::En, ctx.clone())
            .expect("renders");
        assert!(
            english.contains(">Continue</button>"),
            "English keeps the default"
        );
        let default = themes
            .render("default", "identifier.html", Locale::Fr, ctx)
            .expect("renders");
        assert!(
            default.contains(">Continuer</button>"),
            "default theme unchanged"
        );
        themes
            .check_templates("acme", &DEFAULT_TEMPLATES)
            .expect("inherited templates");
    }

    #[test]
    fn a_theme_template_overrides_and_extends_the_default_layout() {
        let dir = TempDir::new();
        dir.write(
            "acme/templates/logged_out.html",
            r#"{% extends "layout.html" %}{% block content %}<h1>Bye from {{ theme }}</h1>{% endblock %}"#,
        );
        dir.write(
            "default/messages/en.toml",
            "brand.name = \"Example Corp\"\n",
        );
        let themes = Themes::load(Some(&dir.0)).expect("loads");
        let html = themes
            .render("acme", "logged_out.html", Locale::En, context! {})
            .expect("renders");
        assert!(html.contains("<h1>Bye from acme</h1>"), "{html}");
        assert!(
            html.contains("Example Corp"),
            "the default folder overrides the embedded default"
        );
        let html = themes
            .render("default", "logged_out.html", Locale::En, context! {})
            .expect("renders");
        assert!(html.contains("You are signed out.") && html.contains("Example Corp"));
    }

    #[test]
    fn a_broken_template_names_its_file() {
        let dir = TempDir::new();
        dir.write("acme/templates/password.html", "{% if error %}unclosed");
        let error = Themes::load(Some(&dir.0)).expect_err("syntax error");
        assert!(matches!(error, ThemeError::Template { .. }));
        let text = error.to_string();
        assert!(
            text.contains("acme") && text.contains("password.html"),
            "{text}"
        );
    }

    #[test]
    fn a_broken_catalog_names_its_file() {
        let dir = TempDir::new();
        dir.write(
            "acme/messages/fr.toml",
            "login.identifier.submit = \"Suivant\n",
        );
        let error = Themes::load(Some(&dir.0)).expect_err("syntax error");
        assert!(matches!(error, ThemeError::CatalogSyntax { .. }));
        assert!(error.to_string().contains("fr.toml"), "{error}");

        let dir = TempDir::new();
        dir.write("acme/messages/en.toml", "login.identifier.submit = 3\n");
        let error = Themes::load(Some(&dir.0)).expect_err("not a string");
        assert!(error.to_string().contains("en.toml"), "{error}");
        assert!(
            error.to_string().contains("login.identifier.submit"),
            "{error}"
        );
    }

    #[test]
    fn theme_folder_names_are_checked() {
        let dir = TempDir::new();
        dir.write("Acme Corp/static/style.css", "");
        let error = Themes::load(Some(&dir.0)).expect_err("invalid name");
        assert!(matches!(error, ThemeError::InvalidThemeName { .. }));
        assert!(error.to_string().contains("Acme Corp"));

        let missing =
            std::env::temp_dir().join(format!("idp-theme-missing-{}", uuid::Uuid::new_v4()));
        assert!(matches!(
            Themes::load(Some(&missing)),
            Err(ThemeError::Io { .. })
        ));
    }

    #[test]
    fn recovery_emails_render_in_both_locales() {
        let themes = themes();
        let url = "https://login.example/reset-password?token=t0k&client_id=shop";
        let cases = [
            (
                "password_reset_link",
                context! { url => url, valid_minutes => 5 },
                vec![url, "5"],
            ),
            (
                "customer_id_reminder",
                context! { customer_id => "ab12345-idp" },
                vec!["ab12345-idp"],
            ),
            ("password_changed", context! {}, vec![]),
            (
                "invitation_link",
                context! { url => url, valid_hours => 24, org_name => "Acme & Co", customer_id => "ab12345-idp" },
                vec![url, "24", "ab12345-idp", "Acme & Co"],
            ),
        ];
        for (family, fields, expected) in cases {
            for locale in Locale::ALL {
                for client_name in ["A & B", ""] {
                    let render = |part: &str| {
                        let ctx = context! { client_name => client_name, ..fields.clone() };
                        themes
                            .render(
                                DEFAULT_THEME,
                                &format!("emails/{family}.{part}"),
                                locale,
                                ctx,
                            )
                            .unwrap_or_else(|e| panic!("{family}.{part}: {e}"))
                    };
                    let shown = match (client_name, locale) {
                        ("", Locale::En) => "Secure sign-in",
                        ("", Locale::Fr) => "Connexion sécurisée",
                        (name, _) => name,
                    };
                    let subject = render("subject.txt");
                    assert!(subject.trim().contains(shown), "{subject:?}");
                    let text = render("txt");
                    let html = render("html");
                    assert!(text.contains(shown), "{text}");
                    assert!(html.contains(&format!("<html lang=\"{}\">", locale.as_str())));
                    for part in &expected {
                        assert!(text.contains(part), "{family} text: {part} in {text}");
                        let escaped = part.replace('&', "&amp;");
                        assert!(
                            html.contains(&escaped),
                            "{family} html: {escaped} in {html}"
                        );
                    }
                }
            }
        }
    }

    /// CSS without its comments and white space.
    fn css_rules(css: &str) -> String {
        let mut rules = String::new();
        let mut rest = css;
        while let Some(start) = rest.find("/*") {
            rules.push_str(&rest[..start]);
            let end = rest[start..].find("*/").expect("closed comment") + start + 2;
            rest = &rest[end..];
        }
        rules.push_str(rest);
        rules.split_whitespace().collect()
    }

    #[test]
    fn the_layout_links_an_empty_theme_css_after_style_css() {
        let themes = themes();
        let html = themes
            .render(
                DEFAULT_THEME,
                "identifier.html",
                Locale::En,
                sample_context("identifier.html"),
            )
            .expect("renders");
        let style = html
            .find(r#"href="/assets/default/style.css""#)
            .expect("style.css");
        let theme = html
            .find(r#"href="/assets/default/theme.css""#)
            .expect("theme.css");
        assert!(style < theme, "theme.css comes last, so its variables win");
        let (content_type, css) = themes.asset(DEFAULT_THEME, "theme.css").expect("served");
        assert_eq!(content_type, "text/css; charset=utf-8");
        assert_eq!(
            css_rules(std::str::from_utf8(&css).expect("utf-8")),
            "",
            "the default theme.css has no rules"
        );
    }

    #[test]
    fn a_theme_naming_its_product_shows_it_instead_of_the_client_name() {
        let dir = TempDir::new();
        dir.write("acme/messages/en.toml", "brand.name = \"Acme Cloud\"\n");
        dir.write("acme/messages/fr.toml", "brand.name = \"Acme Nuage\"\n");
        dir.write(
            "plain/static/theme.css",
            ":root { --color-primary: #14532d; }",
        );
        // The operator's brand (a `default` folder) names no client's pages.
        dir.write("default/messages/en.toml", "brand.name = \"Operator\"\n");
        let themes = Themes::load(Some(&dir.0)).expect("loads");
        let page = |theme: &str, locale| {
            themes
                .render(
                    theme,
                    "identifier.html",
                    locale,
                    sample_context("identifier.html"),
                )
                .expect("renders")
        };
        let html = page("acme", Locale::En);
        assert!(
            html.contains(r#"<p class="masthead__name">Acme Cloud</p>"#),
            "{html}"
        );
        assert!(
            html.contains("<title>Sign in · Acme Cloud</title>"),
            "{html}"
        );
        assert!(
            html.contains("to continue to Marketplace"),
            "the subtitle still names the client: {html}"
        );
        assert!(page("acme", Locale::Fr).contains(r#"<p class="masthead__name">Acme Nuage</p>"#));
        for theme in ["plain", DEFAULT_THEME] {
            let html = page(theme, Locale::En);
            assert!(
                html.contains(r#"<p class="masthead__name">Marketplace</p>"#),
                "{theme}: {html}"
            );
            assert!(!html.contains("Operator"), "{theme}: {html}");
        }
        // Without a client name, the operator's brand.
        let html = themes
            .render("plain", "logged_out.html", Locale::En, context! {})
            .expect("renders");
        assert!(
            html.contains(r#"<p class="masthead__name">Operator</p>"#),
            "{html}"
        );

        // Emails: the header of the HTML part and the signature of the text part.
        let ctx = || {
            context! { kind => "login_code", code => "482913", valid_minutes => 10, client_name => "Marketplace" }
        };
        let render = |theme: &str, template: &str, locale| {
            themes
                .render(theme, template, locale, ctx())
                .unwrap_or_else(|e| panic!("{template}: {e}"))
        };
        let html = render("acme", "emails/login_code.html", Locale::En);
        assert!(html.contains(">Acme Cloud</p>"), "{html}");
        let text = render("acme", "emails/login_code.txt", Locale::Fr);
        assert!(
            text.ends_with("-- \nAcme Nuage\nCe message vous a été envoyé automatiquement. Merci de ne pas y répondre."),
            "{text:?}"
        );
        assert!(
            render("acme", "emails/login_code.subject.txt", Locale::En).contains("Marketplace"),
            "the subject names the client"
        );
        let html = render("plain", "emails/login_code.html", Locale::En);
        assert!(html.contains(">Marketplace</p>"), "{html}");
        let text = render("plain", "emails/login_code.txt", Locale::En);
        assert!(
            text.ends_with("-- \nThis message was sent automatically. Please do not reply."),
            "{text:?}"
        );
    }

    /// The themes of the example clients (`themes/<client>/`, named by the
    /// client files of `config/clients/`): each loads, provides every page
    /// through the default templates, and overrides only its logo, its
    /// colours (`theme.css`) and its product name.
    #[test]
    fn the_example_themes_override_only_their_logo_colours_and_name() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../themes");
        let themes = Themes::load(Some(&root)).expect("the repository's themes load");
        let [en, _] = embedded_catalogs();
        let default_static = |file: &str| {
            themes
                .asset(DEFAULT_THEME, file)
                .expect("default file")
                .1
                .into_owned()
        };
        for (name, en_name, fr_name) in [
            ("marketplace", "Orchardly Market", "Marché Orchardly"),
            ("customer-space", "Lanternhouse", "Lanternhouse"),
            ("cloud-console", "Nimbalt Console", "Console Nimbalt"),
        ] {
            let folder = root.join(name);
            let mut files: Vec<String> = list_files(&folder)
                .expect("theme folder")
                .into_iter()
                .map(|(file, _)| file)
                .collect();
            files.sort();
            let mut allowed = vec!["messages/en.toml", "static/logo.svg", "static/theme.css"];
            if folder.join("messages/fr.toml").is_file() {
                allowed.push("messages/fr.toml");
            }
            allowed.sort_unstable();
            assert_eq!(files, allowed, "{name} overrides only these files");
            for locale in ["en", "fr"] {
                let path = folder.join(format!("messages/{locale}.toml"));
                if let Ok(text) = std::fs::read_to_string(&path) {
                    for id in parse_catalog(&path, &text).expect("parses").keys() {
                        assert!(en.contains_key(id), "{name}: unknown message id {id}");
                    }
                }
            }
            themes
                .check_templates(name, &DEFAULT_TEMPLATES)
                .expect("every page, from the default theme");
            let (_, logo) = themes.asset(name, "logo.svg").expect("logo");
            assert_ne!(*logo, *default_static("logo.svg"), "{name}: its own logo");
            let logo = String::from_utf8(logo.into_owned()).expect("utf-8");
            assert!(
                logo.contains(&format!("<title>{en_name}</title>")),
                "{logo}"
            );
            let (_, css) = themes.asset(name, "theme.css").expect("theme.css");
            let css = String::from_utf8(css.into_owned()).expect("utf-8");
            assert!(
                css_rules(&css).contains("--color-primary:"),
                "{name}: {css}"
            );
            assert!(
                css.contains("prefers-color-scheme: dark"),
                "{name}: both schemes"
            );
            let (_, style) = themes.asset(name, "style.css").expect("style.css");
            assert_eq!(*style, *default_static("style.css"), "{name}: inherited");

            for (locale, brand) in [(Locale::En, en_name), (Locale::Fr, fr_name)] {
                let html = themes
                    .render(
                        name,
                        "identifier.html",
                        locale,
                        sample_context("identifier.html"),
                    )
                    .expect("renders");
                assert!(html.contains(&format!(r#"src="/assets/{name}/logo.svg""#)));
                assert!(html.contains(&format!(r#"href="/assets/{name}/theme.css""#)));
                assert!(
                    html.contains(&format!(r#"<p class="masthead__name">{brand}</p>"#)),
                    "{name} {locale:?}: {html}"
                );
                let default = themes
                    .render(
                        DEFAULT_THEME,
                        "identifier.html",
                        locale,
                        sample_context("identifier.html"),
                    )
                    .expect("renders");
                // The same page as the default theme's but for the theme's name and files.
                let generic = |page: &str, theme: &str, brand: &str| {
                    page.replace(&format!("/assets/{theme}/"), "/assets/THEME/")
                        .replace(
                            &format!(r#"masthead__name">{brand}<"#),
                            r#"masthead__name">BRAND<"#,
                        )
                        .replace(&format!(" · {brand}</title>"), " · BRAND</title>")
                };
                assert_eq!(
                    generic(&html, name, brand),
                    generic(&default, DEFAULT_THEME, "Marketplace"),
                    "{name}: the default template"
                );
            }
        }
    }

    #[test]
    fn themes_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Themes>();
        assert_send_sync::<ThemeError>();
        assert_eq!(
            format!("{:?}", themes()),
            r#"Themes { names: ["default"] }"#
        );
    }
}
