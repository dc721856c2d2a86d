import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.Statement;
import java.util.Properties;

/**
 * What a JDBC-based BI tool does against the SQL endpoint, printed as tab-separated lines the
 * Python test reads back:
 *
 *   SCHEMA  name
 *   TABLE   name  type  remarks
 *   COLUMN  table  name  sqlType  typeName  remarks
 *   PREPARED run  value1  value2 ...          (a PreparedStatement run 6 times)
 *   FETCH   rows                               (setFetchSize with autocommit off)
 *   QUERY   col=value ...                      (one line per row of the summary query)
 *   OK
 *
 * Usage: java -cp postgresql.jar:. JdbcSmoke URL USER PASSWORD TABLE PREPARED_SQL PARAM FETCH_SQL QUERY_SQL
 */
public class JdbcSmoke {
    public static void main(String[] args) throws Exception {
        String url = args[0];
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        String table = args[3];
        String preparedSql = args[4];
        String param = args[5];
        String fetchSql = args[6];
        String querySql = args[7];

        try (Connection conn = DriverManager.getConnection(url, props)) {
            DatabaseMetaData meta = conn.getMetaData();
            try (ResultSet rs = meta.getSchemas()) {
                while (rs.next()) {
                    System.out.println("SCHEMA\t" + rs.getString("TABLE_SCHEM"));
                }
            }
            try (ResultSet rs = meta.getTables(null, "public", "%", new String[] {"TABLE", "VIEW"})) {
                while (rs.next()) {
                    System.out.println("TABLE\t" + rs.getString("TABLE_NAME") + "\t" + rs.getString("TABLE_TYPE")
                            + "\t" + clean(rs.getString("REMARKS")));
                }
            }
            try (ResultSet rs = meta.getColumns(null, "public", table, "%")) {
                while (rs.next()) {
                    System.out.println("COLUMN\t" + rs.getString("TABLE_NAME") + "\t" + rs.getString("COLUMN_NAME")
                            + "\t" + rs.getInt("DATA_TYPE") + "\t" + rs.getString("TYPE_NAME")
                            + "\t" + clean(rs.getString("REMARKS")));
                }
            }

            // pgjdbc switches to a named server-side prepared statement at the 5th execution
            // (prepareThreshold=5): runs 5 and 6 exercise Parse/Bind/Execute of a named statement.
            try (PreparedStatement ps = conn.prepareStatement(preparedSql)) {
                for (int run = 1; run <= 6; run++) {
                    ps.setString(1, param);
                    StringBuilder line = new StringBuilder("PREPARED\t" + run);
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            for (int i = 1; i <= rs.getMetaData().getColumnCount(); i++) {
                                line.append("\t").append(rs.getString(i));
                            }
                        }
                    }
                    System.out.println(line);
                }
            }

            // With autocommit off and a fetch size, pgjdbc uses a portal and fetches in chunks.
            conn.setAutoCommit(false);
            try (Statement st = conn.createStatement()) {
                st.setFetchSize(100);
                long rows = 0;
                try (ResultSet rs = st.executeQuery(fetchSql)) {
                    while (rs.next()) {
                        rows++;
                    }
                }
                System.out.println("FETCH\t" + rows);
            }
            conn.commit();
            conn.setAutoCommit(true);

            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery(querySql)) {
                ResultSetMetaData md = rs.getMetaData();
                while (rs.next()) {
                    StringBuilder line = new StringBuilder("QUERY");
                    for (int i = 1; i <= md.getColumnCount(); i++) {
                        line.append("\t").append(md.getColumnLabel(i)).append("=").append(rs.getString(i));
                    }
                    System.out.println(line);
                }
            }
        }
        System.out.println("OK");
    }

    private static String clean(String text) {
        return text == null ? "" : text.replace('\t', ' ').replace('\n', ' ');
    }
}
